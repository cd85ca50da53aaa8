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
