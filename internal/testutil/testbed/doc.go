// Package testbed runs real Docker daemons for vxbridge's end-to-end tests,
// each inside a network namespace of its own, so tests never touch the
// machine's links, routes or firewall and several "hosts" can share one
// machine.
//
// A Host is a network namespace ("vxt-xxxxxx"), a short state directory
// (/tmp/vxt-xxxxxx: unix socket paths are limited to 108 bytes) and a dockerd
// started in that namespace. Every daemon the package starts (dockerd, the
// plugin, helper servers) runs behind the same preamble:
//
//	nsenter --net=/var/run/netns/NS unshare -m sh -c 'mount --make-rprivate /; ...; exec "$@"'
//
// The private mount namespace gives the daemon a sysfs of its own network
// namespace (`ip netns exec` would also do that, but it hides the cgroup
// mounts and dockerd then fails with "Devices cgroup isn't mounted"), the
// cgroup hierarchy re-bound on top of it, and a tmpfs on /run/docker with the
// host's own plugins folder bound at /run/docker/plugins, so each dockerd
// discovers only its own host's plugin and nothing is mounted in the
// machine's mount namespace. nsenter, unshare and sh all exec, so the pid the
// test starts is the daemon's pid; the package checks this through
// /proc/PID/exe.
//
// Containers are put under a cgroup parent named like the namespace
// (--cgroup-parent /vxt-xxxxxx). Cleanup therefore finds everything a host
// started without guessing by process name: processes whose network namespace
// is the host's (dockerd, containerd, shims, the plugin) and processes in the
// host's cgroup tree (containers, even when their shim is gone). Cleanup
// copes with a dockerd or plugin the test already killed, and, when the
// plugin is dead, kills dockerd at once instead of letting every container
// removal wait 30 s for plugin retries.
//
// Every host of a test binary runs the same Docker daemon, picked by
// VXBRIDGE_TEST_DOCKER (see daemon.go): the current one, built by
// hack/build-docker.sh and put first on the daemons' PATH, or Debian's 20.10.
//
// Hosts know nothing of each other: a multi-host test makes N hosts and
// joins their namespaces with veth pairs (see Veth).
package testbed
