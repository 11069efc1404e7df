package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// dist summarises a set of durations.
type dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(0, min(i, len(s)-1))])
	}
	return dist{N: len(s), P50: q(.50), P95: q(.95), P99: q(.99), Max: ms(s[len(s)-1])}
}

// p50p99 is "p50 X ms, p99 Y ms", or "no samples" when there were none:
// a figure without samples never prints as a number.
func (d dist) p50p99() string {
	if d.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", d.P50, d.P99)
}

// pair is "X / Y" of two of its percentiles in ms, or "—" without samples.
func (d dist) pair(a, b float64) string {
	if d.N == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f / %.1f", a, b)
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

func percentileInt(xs []int, p float64) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p*float64(len(s))))-1)]
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*10) / 10
}
