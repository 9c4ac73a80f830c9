package portproxy

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// udpRelay relays datagrams from each client (a flow) through a socket of
// its own connected to the container, and the container's answers back.
// The clients relayed at once are bounded (Manager.maxUDP); datagrams of
// further clients are dropped until a flow idles out.
type udpRelay struct {
	conn    *net.UDPConn
	m       Mapping
	mgr     *Manager
	refused refusals

	mu    sync.Mutex
	flows map[netip.AddrPort]*net.UDPConn
	done  bool
}

func (mgr *Manager) listenUDP(m Mapping) (holder, error) {
	conn, err := net.ListenUDP(network("udp", m.Host.Addr()), net.UDPAddrFromAddrPort(m.Host))
	if err != nil {
		return nil, err
	}
	r := &udpRelay{conn: conn, m: m, mgr: mgr, flows: map[netip.AddrPort]*net.UDPConn{}}
	go r.read()
	return r, nil
}

func (r *udpRelay) target() netip.AddrPort { return r.m.Target }

func (r *udpRelay) read() {
	buf := make([]byte, 65535)
	for {
		n, client, err := r.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // e.g. an ICMP error of an earlier reply
		}
		if up := r.flow(client); up != nil {
			_, _ = up.Write(buf[:n])
		}
	}
}

// flow returns the upstream socket of client's flow, starting it if new;
// nil when the datagram is to be dropped.
func (r *udpRelay) flow(client netip.AddrPort) *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if up, ok := r.flows[client]; ok || r.done {
		return up
	}
	if len(r.flows) >= r.mgr.maxUDP {
		r.refused.note(r.mgr, "a udp client", r.m, r.mgr.maxUDP)
		return nil
	}
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.m.Target))
	if err != nil {
		r.mgr.log.Debug("relay: cannot reach container", "to", r.m.Target, "err", err)
		return nil
	}
	r.flows[client] = up
	go r.answer(client, up)
	return up
}

// answer sends the container's datagrams back to client until the flow is
// idle for the manager's udpIdle.
func (r *udpRelay) answer(client netip.AddrPort, up *net.UDPConn) {
	defer func() {
		r.mu.Lock()
		delete(r.flows, client)
		r.mu.Unlock()
		up.Close()
	}()
	buf := make([]byte, 65535)
	for {
		_ = up.SetReadDeadline(time.Now().Add(r.mgr.udpIdle))
		n, err := up.Read(buf)
		var nerr net.Error
		switch {
		case errors.As(err, &nerr) && nerr.Timeout(), errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			continue // ICMP port unreachable while the container starts
		}
		_, _ = r.conn.WriteToUDPAddrPort(buf[:n], client)
	}
}

func (r *udpRelay) close() {
	r.conn.Close()
	r.mu.Lock()
	r.done = true
	for _, up := range r.flows {
		up.Close()
	}
	r.mu.Unlock()
}
