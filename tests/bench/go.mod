module github.com/ftpalg/ftpalg/tests/bench

go 1.26.0

require (
	github.com/cilium/ebpf v0.17.3
	github.com/ftpalg/ftpalg v0.0.0-00010101000000-000000000000
	golang.org/x/sys v0.50.0
)

require github.com/vishvananda/netns v0.0.5 // indirect

// The bench measures this tree's ftpalg and uses its test bed.
replace github.com/ftpalg/ftpalg => ../..
