package portproxy

import (
	"io"
	"net"
	"net/netip"
	"sync"
)

// tcpRelay accepts on the host port and splices each connection to the
// container.
type tcpRelay struct {
	ln      *net.TCPListener
	m       Mapping
	mgr     *Manager
	refused refusals
	mu      sync.Mutex
	open    map[net.Conn]struct{} // both ends of every relayed connection
	clients int                   // connections being relayed (the cap counts these)
	done    bool
}

func (mgr *Manager) listenTCP(m Mapping) (holder, error) {
	ln, err := net.ListenTCP(network("tcp", m.Host.Addr()), net.TCPAddrFromAddrPort(m.Host))
	if err != nil {
		return nil, err
	}
	r := &tcpRelay{ln: ln, m: m, mgr: mgr, open: map[net.Conn]struct{}{}}
	go r.accept()
	return r, nil
}

func (r *tcpRelay) target() netip.AddrPort { return r.m.Target }

func (r *tcpRelay) accept() {
	for {
		c, err := r.ln.AcceptTCP()
		if err != nil {
			return // closed
		}
		if !r.admit() {
			_ = c.SetLinger(0) // a reset: the client fails now instead of waiting
			c.Close()
			r.refused.note(r.mgr, "a tcp connection", r.m, r.mgr.maxTCP)
			continue
		}
		go r.relay(c)
	}
}

// admit counts a new client in, unless the port relays its maximum.
func (r *tcpRelay) admit() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clients >= r.mgr.maxTCP {
		return false
	}
	r.clients++
	return true
}

func (r *tcpRelay) leave() {
	r.mu.Lock()
	r.clients--
	r.mu.Unlock()
}

// track records c for close; false when the relay is closed. A relay still
// dialing when the port is released finds out here and gives up.
func (r *tcpRelay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	r.open[c] = struct{}{}
	return true
}

func (r *tcpRelay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.open, c)
	r.mu.Unlock()
	c.Close()
}

func (r *tcpRelay) relay(client *net.TCPConn) {
	defer r.leave()
	if !r.track(client) {
		client.Close()
		return
	}
	defer r.untrack(client)
	c, err := net.DialTimeout("tcp", r.m.Target.String(), r.mgr.dialWait)
	if err != nil {
		r.mgr.log.Debug("relay: container does not answer", "from", client.RemoteAddr(), "to", r.m.Target, "err", err)
		return
	}
	up := c.(*net.TCPConn)
	if !r.track(up) {
		up.Close()
		return
	}
	defer r.untrack(up)
	var both sync.WaitGroup
	both.Add(2)
	half := func(dst, src *net.TCPConn) {
		defer both.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite() // pass the EOF on; the other half may still talk
	}
	go half(up, client)
	go half(client, up)
	both.Wait()
}

// close frees the port at once and ends every relayed connection; it does
// not wait for a dial in progress.
func (r *tcpRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	r.done = true
	for c := range r.open {
		c.Close()
	}
	r.mu.Unlock()
}
