package shard

import "hash/fnv"

// Owner is the member that owns key by rendezvous hashing: the one whose
// score for key is highest (ties, which need a 64-bit collision, go to the
// smallest name). It is "" when members is empty. Every replica gets the
// same answer for the same members, in any order.
func Owner(key string, members []string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		s := score(m, key)
		if best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// score is member's weight for key: FNV-1a over both, then the splitmix64
// finalizer, since FNV alone leaves similar inputs with correlated high
// bits and so would favour some members for runs of similar keys.
func score(member, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	z := h.Sum64()
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
