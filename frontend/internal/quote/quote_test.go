package quote

import (
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	for in, want := range map[string]string{
		"":                      `""`,
		"10.42.2.0/24":          `"10.42.2.0/24"`,
		"a\nb\x00":              `"a\nb\x00"`,
		strings.Repeat("1", 70): `"` + strings.Repeat("1", 64) + `"... (70 bytes)`,
	} {
		if got := Value(in); got != want {
			t.Errorf("Value(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzValue: one line, bounded, whatever the input.
func FuzzValue(f *testing.F) {
	f.Add("\xe900\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf")
	f.Add(strings.Repeat("\x00", 100))
	f.Fuzz(func(t *testing.T, s string) {
		v := Value(s)
		if len(v) > Max+24 || strings.ContainsAny(v, "\n\r\x00") {
			t.Fatalf("Value(%q) = %q", s, v)
		}
	})
}

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"10.42.2.0/24", 64, "10.42.2.0/24"},
		{strings.Repeat("1", 70), 64, strings.Repeat("1", 64) + "..."},
		{"abcé", 4, "abc..."},                      // é is two bytes: not cut in two
		{strings.Repeat("\x80", 10), 4, "\x80..."}, // no character starts: at most UTFMax-1 bytes fewer
	} {
		if got := Bound(tc.in, tc.n); got != tc.want {
			t.Errorf("Bound(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
