package testbed

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Signal sends sig to the process: SIGSTOP and SIGCONT hang a daemon and
// let it go on (its sockets stay open, so clients see a peer that stops
// answering, not one that went away). Signalling an ended process is a
// no-op. A process left stopped still ends at teardown: Stop's SIGKILL
// acts on stopped processes too.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill -%d %s (pid %d): %w", int(sig), p.name, p.Pid(), err)
	}
	return nil
}
