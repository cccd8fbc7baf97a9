package alg

import (
	"bytes"
	"fmt"
	"strings"
)

// verb identifies the commands the engine treats specially.
type verb uint8

const (
	vOther verb = iota
	vPORT
	vEPRT
	vPASV
	vEPSV
	vLPRT // RFC 1639 long address forms: not translated, so refused
	vAUTH
	vUSER // USER, ACCT
	vPASS
	vREIN
	vTransfer
	vABOR
	vPBSZ // RFC 2228/4217: answered by the gateway under TLSTerminate
	vPROT
	vCCC
)

// classify maps a verb (ASCII letters, any case) to its kind without
// allocating: the upper-cased copy lives on the stack and the switch on
// string(...) compiles to comparisons, not a conversion.
func classify(v []byte) verb {
	if len(v) == 3 && v[0]&^0x20 == 'C' && v[1]&^0x20 == 'C' && v[2]&^0x20 == 'C' {
		return vCCC
	}
	if len(v) != 4 {
		return vOther
	}
	var up [4]byte
	for i, b := range v {
		up[i] = b &^ 0x20 // letters only (parse.Command checked)
	}
	switch string(up[:]) {
	case "PORT":
		return vPORT
	case "EPRT":
		return vEPRT
	case "PASV":
		return vPASV
	case "EPSV":
		return vEPSV
	case "LPRT", "LPSV":
		return vLPRT
	case "AUTH":
		return vAUTH
	case "USER", "ACCT":
		return vUSER
	case "PASS":
		return vPASS
	case "REIN":
		return vREIN
	case "RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD":
		return vTransfer
	case "ABOR":
		return vABOR
	case "PBSZ":
		return vPBSZ
	case "PROT":
		return vPROT
	}
	return vOther
}

// compileDenied splits each DeniedCommands entry into words.
func compileDenied(list []string) ([][][]byte, error) {
	out := make([][][]byte, 0, len(list))
	for i, s := range list {
		f := strings.Fields(s)
		if len(f) == 0 {
			return nil, fmt.Errorf("DeniedCommands[%d] is empty: it would deny every command", i)
		}
		words := make([][]byte, len(f))
		for k, w := range f {
			words[k] = []byte(w)
		}
		out = append(out, words)
	}
	return out, nil
}

// denied reports whether line starts, word by word and ignoring case, with
// one of the denied entries. Words are separated by runs of spaces or tabs
// here, more loosely than the server splits them, so that "SITE  EXEC" is
// denied too.
func denied(list [][][]byte, line []byte) bool {
next:
	for _, words := range list {
		rest := line
		for _, w := range words {
			var word []byte
			word, rest = nextWord(rest)
			if !bytes.EqualFold(word, w) {
				continue next
			}
		}
		return true
	}
	return false
}

func nextWord(s []byte) (word, rest []byte) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	j := i
	for j < len(s) && s[j] != ' ' && s[j] != '\t' {
		j++
	}
	return s[i:j], s[j:]
}
