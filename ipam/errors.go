package ipam

import (
	"errors"
	"fmt"
)

// Error classes. The message of an error built with errorf is written in
// full for the operator (it names the value and the pool) and does not
// repeat the class; callers classify with errors.Is, never by text.
var (
	// ErrInvalid: a pool, ip range, address, pool id or option that does
	// not parse or does not fit.
	ErrInvalid = errors.New("invalid")
	// ErrUnknownPool: the pool id is not held by this driver.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrPoolOverlap: the requested pool overlaps one already held.
	ErrPoolOverlap = errors.New("pool overlaps a pool in use")
	// ErrNoDefaultPool: every default pool overlaps a held pool or a host route.
	ErrNoDefaultPool = errors.New("no free default pool")
	// ErrAddressInUse: the requested address is taken.
	ErrAddressInUse = errors.New("address in use")
	// ErrOutsidePool: the requested address is not a usable address of the pool.
	ErrOutsidePool = errors.New("address outside pool")
	// ErrPoolExhausted: no free address is left in the pool's range.
	ErrPoolExhausted = errors.New("pool exhausted")
)

type classifiedError struct {
	class error
	msg   string
}

func (e *classifiedError) Error() string { return e.msg }
func (e *classifiedError) Unwrap() error { return e.class }

// errorf builds an error of class whose text is the formatted message only.
func errorf(class error, format string, args ...any) error {
	return &classifiedError{class: class, msg: fmt.Sprintf(format, args...)}
}
