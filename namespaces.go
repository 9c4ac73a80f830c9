package main

import (
	"github.com/vxbridge/vxbridge/driver"
	"github.com/vxbridge/vxbridge/namespace/networks"
)

// driverNamespaces hands the networks' own namespaces (package
// namespace/networks) to the driver as driver.Namespaces. Go wants the
// interface's own types in the method signatures, and package networks
// does not import the driver: arrows point down.
type driverNamespaces struct{ *networks.Namespaces }

var _ driver.Namespaces = driverNamespaces{}

func (s driverNamespaces) Ensure(name string) (driver.NetNS, error) {
	ns, err := s.Namespaces.Ensure(name)
	if err != nil {
		return nil, err
	}
	return driverNetNS{ns}, nil
}

func (s driverNamespaces) Open(name string) (driver.NetNS, bool, error) {
	ns, found, err := s.Namespaces.Open(name)
	if err != nil || !found {
		return nil, false, err
	}
	return driverNetNS{ns}, true, nil
}

// List names the driver's namespaces: those with its prefix.
func (s driverNamespaces) List() ([]string, error) { return s.Namespaces.List(driver.NetNSPrefix) }

type driverNetNS struct{ *networks.Namespace }

func (ns driverNetNS) Links() driver.Links { return ns.Namespace.Links() }
func (ns driverNetNS) VXLAN() driver.VXLAN { return ns.Namespace.VXLAN() }
