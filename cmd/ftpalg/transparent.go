package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/ftpalg/ftpalg/cmd/ftpalg/config"
	"github.com/ftpalg/ftpalg/natrules/transparent"
)

// routing is FTPALG_TRANSPARENT's part of the gateway (natrules/transparent).
type routing interface {
	Install() error
	Adopt() error // Install for a process taking over (upgrade.go)
	Remove() error
}

// removeLeftRouting removes the routing a previous process left: an
// upgrade may have turned FTPALG_TRANSPARENT off, and the process that
// took over owns what the previous one installed.
func removeLeftRouting(log *slog.Logger) error {
	r, closeRouting, err := transparentRouting(false, log)
	if err != nil {
		return err
	}
	defer closeRouting()
	return r.Remove()
}

// transparentRouting is the routing over this namespace's netlink, and
// the handle to close after Remove.
func transparentRouting(ipv6 bool, log *slog.Logger) (*transparent.Routing, func(), error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("transparent routing: netlink socket: %w", err)
	}
	return transparent.New(transparent.Config{IPv6: ipv6}, h, transparent.NFT{}, log), h.Close, nil
}

// buildTransparent checks what can be checked of FTPALG_TRANSPARENT at
// start (docs/transparent.md) and makes its routing; nil when it is off.
func buildTransparent(cfg *config.Config, log *slog.Logger) (routing, func(), error) {
	if !cfg.Transparent {
		return nil, func() {}, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, nil, fmt.Errorf("transparent routing: netlink socket: %w", err)
	}
	var errs []error
	v6 := false
	for _, up := range cfg.Upstream {
		f := transparent.CheckUpstream(h, up.Addr())
		if f.Err != nil {
			errs = append(errs, f.Err)
		}
		if f.Warning != "" {
			log.Warn("FTPALG_TRANSPARENT: "+f.Warning, "upstream", up.String())
		}
		v6 = v6 || up.Addr().Is6()
	}
	if err := errors.Join(errs...); err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("FTPALG_TRANSPARENT: %w", err)
	}
	return transparent.New(transparent.Config{IPv6: v6 && cfg.IPv6}, h, transparent.NFT{}, log), h.Close, nil
}
