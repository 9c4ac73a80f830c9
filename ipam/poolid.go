package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// Pool ids are "<space>/<pool>" or "<space>/<pool>/<ip range>", e.g.
// "vxbridge-local/10.1.0.0/16/10.1.4.0/24". Docker stores the id with the
// network and hands it back on every call, so it is kept readable in
// `docker network inspect` and decodable without the store. Address space
// names may not contain "/", which keeps the split unambiguous.

func formatPoolID(space string, pool, rng netip.Prefix) string {
	if rng == pool || !rng.IsValid() {
		return space + "/" + pool.String()
	}
	return space + "/" + pool.String() + "/" + rng.String()
}

// parsePoolID splits a pool id; rng equals pool when the id names no range.
func parsePoolID(id string) (space string, pool, rng netip.Prefix, err error) {
	parts := strings.Split(id, "/")
	if (len(parts) != 3 && len(parts) != 5) || parts[0] == "" {
		return "", pool, rng, errorf(ErrInvalid, "invalid pool id %q: want <address space>/<pool>[/<ip range>]", id)
	}
	space = parts[0]
	if pool, err = parsePrefix("pool", parts[1]+"/"+parts[2]); err != nil {
		return "", pool, rng, fmt.Errorf("pool id %q: %w", id, err)
	}
	rng = pool
	if len(parts) == 5 {
		if rng, err = parsePrefix("ip range", parts[3]+"/"+parts[4]); err != nil {
			return "", pool, rng, fmt.Errorf("pool id %q: %w", id, err)
		}
	}
	return space, pool, rng, nil
}
