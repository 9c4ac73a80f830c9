package driver

import "github.com/vxbridge/vxbridge/store"

// endpointOn returns the endpoint's record (nil when there is none) and
// refuses one that is recorded on another network than netID: a request
// naming the wrong network must not leave, unpublish or delete an endpoint
// of another network. Docker always sends the endpoint's own network.
func (d *Driver) endpointOn(netID, epID string) (*store.Endpoint, error) {
	ep, err := d.store.Endpoint(epID)
	if err != nil || ep == nil {
		return nil, err
	}
	if ep.NetworkID != netID {
		return nil, invalidf("endpoint %s is on network %s, not on network %s", short(epID), short(ep.NetworkID), short(netID))
	}
	return ep, nil
}
