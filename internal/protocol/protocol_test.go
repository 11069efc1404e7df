package protocol

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		code int32 // 0: valid
	}{
		{"subscribe", `{"type":"subscribe","id":"s1","namespace":"fleet","clusters":["a","b"]}`, 0},
		{"resume", `{"type":"subscribe","id":"s1","namespace":"fleet","resourceVersion":"123"}`, 0},
		{"all namespaces", `{"type":"subscribe","id":"all","kind":"ManagedCluster"}`, 0},
		{"unsubscribe", `{"type":"unsubscribe","id":"s1"}`, 0},
		{"operations", `{"type":"subscribe","id":"ops","kind":"NodeOperation","namespace":"fleet","resourceVersion":"7"}`, 0},
		{"operations by cluster", `{"type":"subscribe","id":"ops","kind":"NodeOperation","namespace":"fleet","clusters":["a"]}`, http.StatusBadRequest},
		{"not json", `{"type":`, http.StatusBadRequest},
		{"two values", `{"type":"unsubscribe","id":"a"} {}`, http.StatusBadRequest},
		{"unknown field", `{"type":"subscribe","id":"s","namespaces":"x"}`, http.StatusBadRequest},
		{"unknown type", `{"type":"publish","id":"s"}`, http.StatusBadRequest},
		{"no id", `{"type":"subscribe"}`, http.StatusBadRequest},
		{"bad id", `{"type":"subscribe","id":"a b"}`, http.StatusBadRequest},
		{"bad kind", `{"type":"subscribe","id":"s","kind":"Pod"}`, http.StatusBadRequest},
		{"bad namespace", `{"type":"subscribe","id":"s","namespace":"Fleet!"}`, http.StatusBadRequest},
		{"bad cluster", `{"type":"subscribe","id":"s","clusters":["a.b"]}`, http.StatusBadRequest},
		{"bad rv", `{"type":"subscribe","id":"s","resourceVersion":"12a"}`, http.StatusBadRequest},
		{"huge rv", `{"type":"subscribe","id":"s","resourceVersion":"99999999999999999999"}`, http.StatusBadRequest},
		{"too big", `{"type":"subscribe","id":"s","namespace":"` + strings.Repeat("a", MaxMessageBytes) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, st := Decode([]byte(tc.in))
			switch {
			case tc.code == 0 && st != nil:
				t.Fatalf("want valid, got %d %s", st.Code, st.Message)
			case tc.code == 0 && m.Kind == "" && m.Type == TypeSubscribe:
				t.Fatal("kind was not defaulted")
			case tc.code != 0 && st == nil:
				t.Fatalf("want %d, got valid %+v", tc.code, m)
			case tc.code != 0 && (st.Code != tc.code || st.Message == "" || st.Kind != "Status"):
				t.Fatalf("want %d with a message, got %+v", tc.code, st)
			}
		})
	}
}

// TestErrorsEchoLittle: whatever a client sends, an error quotes at most
// MaxEchoBytes of it, so a 4 KiB message of characters that JSON escapes
// six-fold is never answered with a 24 KiB error.
func TestErrorsEchoLittle(t *testing.T) {
	lt := strings.Repeat("<", MaxMessageBytes-100)
	for name, in := range map[string]string{
		"type":            `{"type":"` + lt + `","id":"s"}`,
		"kind":            `{"type":"subscribe","id":"s","kind":"` + lt + `"}`,
		"namespace":       `{"type":"subscribe","id":"s","namespace":"` + lt + `"}`,
		"cluster":         `{"type":"subscribe","id":"s","clusters":["` + lt + `"]}`,
		"resourceVersion": `{"type":"subscribe","id":"s","resourceVersion":"` + lt + `"}`,
		"id":              `{"type":"subscribe","id":"` + lt + `"}`,
		"unknown field":   `{"` + lt + `":1}`,
		"syntax":          `{"type":"subscribe"` + lt,
		"number":          `{"type":` + strings.Repeat("1", MaxMessageBytes-100) + `}`,
		"array":           `[` + strings.Repeat(`"<",`, 900) + `"<"]`,
		"too big":         `{"type":"subscribe","id":"s","namespace":"` + strings.Repeat("<", MaxMessageBytes) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, st := Decode([]byte(in))
			if st == nil {
				t.Fatal("accepted")
			}
			if n := strings.Count(st.Message, "<") + strings.Count(st.Message, "1"); n > MaxEchoBytes+2 {
				t.Errorf("message repeats %d bytes of the input: %.200s", n, st.Message)
			}
			raw, _ := json.Marshal(st)
			if len(raw) > 1024 {
				t.Errorf("encoded Status is %d bytes: %.200s", len(raw), raw)
			}
			t.Log(st.Message)
		})
	}
}

func TestQuoteAndClip(t *testing.T) {
	if got := Quote("short"); got != `"short"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("é", 100) // two bytes each: cuts must not split one
	q := Quote(long)
	if !strings.HasSuffix(q, "... (200 bytes)") || strings.Count(q, "é") != MaxEchoBytes/2 {
		t.Errorf("Quote(long) = %s", q)
	}
	if got := Clip(long, 11); got != "éééé..." {
		t.Errorf("Clip = %q", got)
	}
	if st := NewStatus(http.StatusBadRequest, "", strings.Repeat("x", 5000)); len(st.Message) > MaxStatusMessageBytes {
		t.Errorf("Status message of %d bytes", len(st.Message))
	}
}

func TestParseResourceVersion(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1": 1, "18446744073709551615": 1<<64 - 1} {
		if got, err := ParseResourceVersion(in); err != nil || got != want {
			t.Errorf("ParseResourceVersion(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "18446744073709551616", "1.5", "abc"} {
		if _, err := ParseResourceVersion(in); err == nil {
			t.Errorf("ParseResourceVersion(%q) accepted", in)
		}
	}
}

// FuzzDecode checks that no input crashes the decoder and that every answer
// is either a valid message or a Status that can be sent back.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","id":"s1","namespace":"fleet","clusters":["a","b"],"resourceVersion":"10"}`,
		`{"type":"unsubscribe","id":"s1"}`,
		`{"type":"subscribe","id":"x","kind":"ManagedCluster"}`,
		`{"type":"subscribe","id":"ops","kind":"NodeOperation","namespace":"fleet","resourceVersion":"3"}`,
		`{"type":"subscribe","id":"ops","kind":"NodeOperation","clusters":["a"]}`,
		`{"type":"subscribe","id":"x","clusters":[1,2]}`,
		`{"type":"subscribe","id":"x","resourceVersion":"18446744073709551616"}`,
		`[]`, `null`, `""`, `{"type":null}`, "\xff\xfe", `{"id":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, st := Decode(data)
		if st != nil {
			if st.Code < 400 || st.Message == "" {
				t.Fatalf("bad status %+v", st)
			}
			if _, err := json.Marshal(st); err != nil {
				t.Fatal(err)
			}
			return
		}
		if m == nil || !idPattern.MatchString(m.ID) || (m.Type != TypeSubscribe && m.Type != TypeUnsubscribe) {
			t.Fatalf("accepted invalid message %+v", m)
		}
		if m.Type == TypeSubscribe && !slices.Contains(Kinds, m.Kind) {
			t.Fatalf("accepted kind %q", m.Kind)
		}
		if m.Kind == KindNodeOperation && len(m.Clusters) > 0 {
			t.Fatalf("accepted a cluster filter on NodeOperations")
		}
	})
}
