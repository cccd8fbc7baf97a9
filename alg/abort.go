package alg

// urgentEnd says how much of an ABOR line goes out as urgent data: through
// the Telnet DM if the client sent the RFC 959 form (IAC IP IAC DM ABOR, as
// lftp does), else the whole line (Python's ftplib sends it all urgent).
func urgentEnd(raw []byte) int {
	for i := 0; i+1 < len(raw); i++ {
		if raw[i] != tnIAC {
			continue
		}
		if raw[i+1] == tnDM {
			return i + 2
		}
		i++ // the command byte, or the second IAC of an escaped 0xFF
	}
	return len(raw)
}
