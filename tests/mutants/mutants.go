package main

// A mutant breaks one guarded property on purpose. Each edit's Old must occur
// exactly once in its file: after a refactor the runner stops loudly instead
// of silently testing an unbroken product.

type edit struct {
	File, Old, New string
}

// spec is one `go test` run: a package and a -run pattern.
type spec struct {
	Pkg, Run string
}

type mutant struct {
	Property, Name string
	Edits          []edit
	Tests          []spec
}

var (
	hostile    = spec{"./tests/", "^TestForwardHostile$"}
	install    = spec{"./tests/", "^TestFaultHoleInstallFailure$"}
	pipeline   = spec{"./tests/", "^TestPoolPipelinedForward$"}
	bounce     = spec{"./alg/", "^TestActiveCommands$"}
	order      = spec{"./alg/", "^TestOrderedRevocation$"}
	withheld   = spec{"./proxy/", "^TestOpenFailureWithheld$"}
	failClosed = spec{"./natrules/", "^TestManagerFailClosed$"}
	seamless   = spec{"./tests/", "^TestUpgradeSeamless$"}
	adopts     = spec{"./tests/", "^TestUpgradeAdoptsHoles$"}
	spares     = spec{"./tests/", "^TestUpgradeOldRevokeSparesNewHole$"}
)

var mutants = []mutant{
	{
		Property: "upgrade keeps the rules",
		Name:     "the old process removes the rules after the handover",
		Edits: []edit{{"cmd/ftpalg/run.go",
			`		log.Info("stopped after the upgrade; the rules and the routing stay with the new process")`, `		removeRules(rules)`}},
		Tests: []spec{seamless},
	},
	{
		Property: "upgrade adopts the holes",
		Name:     "the new process sweeps (Setup) instead of adopting",
		Edits:    []edit{{"cmd/ftpalg/run.go", `	if d.upg.adopting() {`, `	if false && d.upg.adopting() {`}},
		Tests:    []spec{adopts},
	},
	{
		Property: "upgrade adopts the holes",
		Name:     "the new process's pool ignores the adopted holes' ports",
		Edits:    []edit{{"proxy/reserve.go", `	s.pool.claim(peer, port, until)`, `	_ = s.pool`}},
		Tests:    []spec{adopts},
	},
	{
		Property: "upgrade keeps the rules",
		Name:     "the old process still deletes its holes from the kernel after the handover",
		Edits:    []edit{{"natrules/adopt.go", "	m.detached.Store(true)\n", ``}},
		Tests:    []spec{spares},
	},
	{
		Property: "one-shot",
		Name:     "filter hole chain keeps the set entry (no --del-set)",
		Edits: []edit{{"natrules/rules.go",
			`rule(tFilter, chHole, "-j", "SET", "--del-set", fwd, "src,dst,dst"),`, ``}},
		Tests: []spec{hostile},
	},
	{
		Property: "pinned source",
		Name:     "filter set entry and match ignore the source (dst,dst,dst)",
		Edits: []edit{
			{"natrules/rules.go",
				`"--del-set", fwd, "src,dst,dst"`, `"--del-set", fwd, "dst,dst,dst"`},
			{"natrules/rules.go",
				`"--match-set", fwd, "src,dst,dst", "-j", chHole}`, `"--match-set", fwd, "dst,dst,dst", "-j", chHole}`},
			{"natrules/rules.go",
				`es := []setEntry{{Set: fwdSet(fam), Src: h.From, Port: dst.Port(), Dst: dst.Addr()}}`,
				`es := []setEntry{{Set: fwdSet(fam), Src: dst.Addr(), Port: dst.Port(), Dst: dst.Addr()}}`},
		},
		Tests: []spec{hostile},
	},
	{
		Property: "time to live",
		Name:     "ipset entries added with timeout 0 (permanent)",
		Edits: []edit{{"natrules/internal/ipset/ipset.go",
			`nl.IPSET_ATTR_TIMEOUT|nl.NLA_F_NET_BYTEORDER, ttl)`,
			`nl.IPSET_ATTR_TIMEOUT|nl.NLA_F_NET_BYTEORDER, 0)`}},
		Tests: []spec{hostile},
	},
	{
		Property: "bounce refusal",
		Name:     "PORT/EPRT to an address not the client's accepted",
		Edits: []edit{{"alg/client.go",
			`case ap.Addr() != s.client:`, `case false && ap.Addr() != s.client:`}},
		Tests: []spec{bounce, hostile},
	},
	{
		Property: "fail-closed on install failure",
		Name:     "failed Open still sends the rewritten line (no 425)",
		Edits: []edit{{"proxy/feed.go",
			"if err != nil {\n\t\tss.ports.side = from",
			"if err != nil && false {\n\t\tss.ports.side = from"}},
		Tests: []spec{install, withheld},
	},
	{
		Property: "fail-closed on install failure",
		Name:     "a failed install leaves its set members in the kernel",
		Edits: []edit{{"natrules/holes.go",
			"m.undo(m.tab.Abort(op))\n\t\treturn err\n\t}\n\tm.tab.Commit(op, false",
			"m.forgot(m.tab.Abort(op))\n\t\treturn err\n\t}\n\tm.tab.Commit(op, false"}},
		Tests: []spec{failClosed},
	},
	{
		Property: "command/reply order",
		Name:     "a 227/229 revokes every hole, not only older ones",
		Edits: []edit{{"alg/server.go",
			`revoked := s.revokeBefore(e.seq)`, `revoked := s.revokeBefore(^uint64(0))`}},
		Tests: []spec{order, pipeline},
	},
}
