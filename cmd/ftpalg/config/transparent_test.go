package config

import (
	"strings"
	"testing"
)

func TestTransparentOnlyInReverseMode(t *testing.T) {
	up := "FTPALG_UPSTREAM=192.0.2.10:21"
	for _, tc := range []struct {
		env  []string
		want string // "" = valid
	}{
		{[]string{"FTPALG_MODE=reverse", up, "FTPALG_TRANSPARENT=true"}, ""},
		{[]string{"FTPALG_MODE=reverse", up}, ""},
		{[]string{"FTPALG_MODE=sidecar", up, "FTPALG_TRANSPARENT=true"},
			`FTPALG_TRANSPARENT="true": only reverse mode (FTPALG_MODE=reverse) keeps the client's address; set FTPALG_TRANSPARENT=false in sidecar mode`},
		{[]string{"FTPALG_CAPTURE_IFACES=lan0", "FTPALG_TRANSPARENT=true"}, "set FTPALG_TRANSPARENT=false in forward mode"},
		{[]string{"FTPALG_MODE=reverse", up, "FTPALG_TRANSPARENT=yes"}, `FTPALG_TRANSPARENT="yes"`},
	} {
		c, err := Load(tc.env)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.want == "" && c.Transparent != strings.Contains(strings.Join(tc.env, " "), "TRANSPARENT=true"):
			t.Errorf("%v: Transparent = %v", tc.env, c.Transparent)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
	}
}
