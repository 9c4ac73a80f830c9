// Package names makes the containers of a cross-host network findable by
// name from every host: `ping web` in a container on host B finds the
// container named web on host A.
//
// # Design notes
//
// Docker passes no container name to a network driver, and its embedded
// DNS (127.0.0.11 in each container) knows only the containers of its own
// daemon. Two facts, measured on docker 20.10 and the current daemon, give
// vxbridge what it needs without the docker API:
//
//   - Docker's embedded DNS answers a PTR query for a container's address
//     with "<container>.<network>", inside the container's network
//     namespace, which Join names (SandboxKey). The Learner asks it there,
//     after Join, in a goroutine of its own, asking again every few ms
//     (later with backoff) until docker answers (bounded: learnFor), and
//     the driver publishes the name with the endpoint's cross-host record
//     (cluster.Endpoint's Name and Domain): it goes when the record goes.
//     Docker's event stream would tell the name too, but needs the docker
//     socket, which a network plugin otherwise never touches (a managed
//     plugin starts before dockerd serves its API, and the socket is root
//     on the host): the PTR answer needs nothing docker does not give every
//     container.
//   - A name the embedded DNS does not know is forwarded to the container's
//     upstream resolvers from the container's own namespace, so the query
//     crosses the network's bridge and gateway link into the host's
//     namespace, as all traffic out of the network. There a nat rule of the
//     network (firewall.Network's NamesPort) redirects UDP and TCP to port
//     53 outside the network's subnet to the Server, which finds the
//     upstream the query was sent to in conntrack. It answers the names of
//     the same network's containers on other hosts (peers.Names, a
//     snapshot per network the network's follower swaps in whole: no lock,
//     no wait for the follower or for docker's calls) and passes everything
//     else on, unchanged, to that upstream, from the host (as the
//     masqueraded query would have gone). Docker answers its own
//     containers' names first: those queries never leave the container.
//
// Where docker forwards from the host's namespace instead (recent daemons,
// when the host's resolv.conf names only a loopback resolver such as
// systemd-resolved's 127.0.0.53), the query never crosses the network and
// is not seen: give the daemon or the container a resolver that is not on
// the host's loopback (dockerd's "dns" setting, or docker run --dns).
package names
