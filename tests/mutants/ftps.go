package main

// The FTPS termination mutants (issue 16, docs/ftps.md).

var (
	tlsStates    = spec{"./alg/", "^(TestTLSTerminateStateMachine|TestTLSPlaintextAfterAuth)$"}
	tlsControl   = spec{"./proxy/", "^TestTLSTerminateControl$"}
	ftpsPlain    = spec{"./tests/", "^TestFTPS$/^plaintext_login_refused$"}
	ftpsReuse    = spec{"./tests/", "^TestFTPS$/^session_reuse_required$"}
	ftpsRelayTLS = spec{"./tests/", "^TestFTPS$/^curl_--ssl-reqd_EPSV_download$"}
)

func init() {
	mutants = append(mutants,
		mutant{
			Property: "FTPS: TLS required",
			Name:     "USER/PASS before AUTH TLS forwarded",
			Edits:    []edit{{"alg/tls.go", "if required && !t.on {", "if false && required && !t.on {"}},
			Tests:    []spec{tlsStates, ftpsPlain},
		},
		mutant{
			Property: "FTPS: TLS required",
			Name:     "data commands without PROT P forwarded",
			Edits:    []edit{{"alg/tls.go", "if required && !t.protP {", "if false && required && !t.protP {"}},
			Tests:    []spec{tlsStates},
		},
		mutant{
			Property: "FTPS: no plaintext injection",
			Name:     "client bytes before the handshake read as commands",
			Edits:    []edit{{"alg/session.go", "if from == FromClient && s.tls.await {", "if false && from == FromClient && s.tls.await {"}},
			Tests:    []spec{tlsStates, tlsControl},
		},
		mutant{
			Property: "FTPS: session reuse",
			Name:     "a data connection that did not resume accepted",
			Edits:    []edit{{"proxy/ftps.go", "ss.srv.cfg.TLS.SessionReuse && !tc.ConnectionState().DidResume", "ss.srv.cfg.TLS.SessionReuse && false"}},
			Tests:    []spec{ftpsReuse},
		},
		mutant{
			Property: "FTPS: PROT P data protected",
			Name:     "a PROT P hole takes the kernel path (client's TLS meets the plain server)",
			Edits:    []edit{{"alg/endpoint.go", "h.Relay = h.Relay || h.Protect", "h.Protect = false"}, {"alg/endpoint.go", "relay := s.bridge || s.tls.protP", "relay := s.bridge"}, {"alg/endpoint.go", "Relay: relay, Protect: s.tls.protP}", "Relay: relay}"}},
			Tests:    []spec{ftpsRelayTLS},
		},
	)
}
