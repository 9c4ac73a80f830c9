package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseServeFlags: any value of any VXBRIDGE_* variable (a managed
// plugin's `docker plugin set`) and any argument either parses or is refused
// with an error; never a panic, and the result does not depend on anything
// but the input.
func FuzzParseServeFlags(f *testing.F) {
	f.Add("RECONCILE_INTERVAL", "5s", "--log-level=debug")
	f.Add("ETCD_ENDPOINTS", "http://10.0.0.1:2379,http://[::1]:2379", "--host-ttl=-1s")
	f.Add("LOG_LEVEL", "LOUD", "--metrics-listen=:0")
	f.Add("WRITABLE_PROC_SYS", "maybe", "")
	f.Add("HOST_TTL", "1e400h", "--vtep-ip=fe80::1%eth0")
	f.Fuzz(func(t *testing.T, key, value, arg string) {
		env := func(k string) (string, bool) {
			if k == "VXBRIDGE_"+strings.ToUpper(key) {
				return value, true
			}
			return "", false
		}
		var args []string
		if arg != "" {
			args = []string{arg}
		}
		a, errA := parseServeFlags(args, env, io.Discard)
		b, errB := parseServeFlags(args, env, io.Discard)
		if (errA == nil) != (errB == nil) || (errA == nil && !reflect.DeepEqual(a, b)) {
			t.Fatalf("two parses of the same input differ: %+v %v / %+v %v", a, errA, b, errB)
		}
	})
}
