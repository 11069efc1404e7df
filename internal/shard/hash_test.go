package shard

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ManagedCluster/team-%d/cluster-%d", i%17, i)
	}
	return out
}

func TestOwnerIsDeterministicAndOrderFree(t *testing.T) {
	members := []string{"op-a", "op-b", "op-c", "op-d"}
	reversed := slices.Clone(members)
	slices.Reverse(reversed)
	for _, k := range keys(500) {
		o := Owner(k, members)
		if !slices.Contains(members, o) {
			t.Fatalf("Owner(%q) = %q, not a member", k, o)
		}
		if o2 := Owner(k, reversed); o2 != o {
			t.Fatalf("Owner(%q) depends on member order: %q vs %q", k, o, o2)
		}
	}
	if o := Owner("x", nil); o != "" {
		t.Errorf("Owner with no members = %q, want \"\"", o)
	}
}

// TestOwnerBalances: each of n members gets about 1/n of the keys.
func TestOwnerBalances(t *testing.T) {
	ks := keys(6000)
	members := []string{"nodemirror-operator-7c9f-x1", "nodemirror-operator-7c9f-x2", "nodemirror-operator-7c9f-x3"}
	count := map[string]int{}
	for _, k := range ks {
		count[Owner(k, members)]++
	}
	want := float64(len(ks)) / float64(len(members))
	for _, m := range members {
		if dev := math.Abs(float64(count[m])-want) / want; dev > 0.1 {
			t.Errorf("%s owns %d keys, %.0f%% off the fair %0.f", m, count[m], 100*dev, want)
		}
	}
}

// TestJoinAndLeaveMoveOnlyTheirShare: a joining member takes about 1/(n+1)
// of the keys, all of them from the others, and no key moves between the
// members that stay; a leaving member's keys alone move.
func TestJoinAndLeaveMoveOnlyTheirShare(t *testing.T) {
	ks := keys(6000)
	before := []string{"a", "b", "c"}
	after := append(slices.Clone(before), "d")
	moved := 0
	for _, k := range ks {
		was, is := Owner(k, before), Owner(k, after)
		if was != is {
			moved++
			if is != "d" {
				t.Fatalf("%s moved from %s to %s, not to the joining member", k, was, is)
			}
		}
	}
	share := float64(len(ks)) / float64(len(after))
	if f := float64(moved); f < 0.85*share || f > 1.15*share {
		t.Errorf("join moved %d keys, want about %.0f", moved, share)
	}
	// d leaves again: exactly the keys it held go back, each to its old owner.
	for _, k := range ks {
		if Owner(k, after) != "d" && Owner(k, before) != Owner(k, after) {
			t.Fatalf("%s would move when d leaves though d does not own it", k)
		}
	}
	// Another member, b, leaves: only b's keys move.
	without := []string{"a", "c", "d"}
	for _, k := range ks {
		if was := Owner(k, after); was != "b" && Owner(k, without) != was {
			t.Fatalf("%s moved from %s when b left", k, was)
		}
	}
}
