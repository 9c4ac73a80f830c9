package driver

import "github.com/docker/go-plugins-helpers/network"

// ProgramExternalConnectivity is where published ports (-p) are programmed.
// Until vxbridge publishes ports itself it refuses them loudly: silently
// ignoring -p is the complaint users file against remote drivers most.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	pm, ok := req.Options["com.docker.network.portmap"].([]interface{})
	if ok && len(pm) > 0 {
		return invalidf("publishing ports (-p/-P) on vxbridge networks is not supported yet; remove -p or attach the container to a docker bridge network for published ports")
	}
	return nil
}

// RevokeExternalConnectivity undoes ProgramExternalConnectivity: nothing yet.
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}
