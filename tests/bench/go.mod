module github.com/ftpalg/ftpalg/tests/bench

go 1.26.0

require (
	github.com/cilium/ebpf v0.17.3
	github.com/ftpalg/ftpalg v0.0.0-00010101000000-000000000000
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42
	golang.org/x/sys v0.50.0
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/mdlayher/socket v0.5.0 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
)

// The bench measures this tree's ftpalg and uses its test bed.
replace github.com/ftpalg/ftpalg => ../..
