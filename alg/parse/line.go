package parse

// Command splits a command line (CRLF and Telnet commands already removed)
// into its verb and argument. The verb must be 1..8 ASCII letters followed by
// the end of the line or exactly one space. Anything else (a leading space, a
// tab, a digit, a 0xFF byte) is refused: lenient servers trim or skip such
// bytes, and a verb we cannot see is a verb we cannot police.
func Command(line []byte) (verb, arg []byte, ok bool) {
	i := 0
	for i < len(line) && isLetter(line[i]) {
		i++
	}
	if i == 0 || i > 8 {
		return nil, nil, false
	}
	if i == len(line) {
		return line, nil, true
	}
	if line[i] != ' ' {
		return nil, nil, false
	}
	return line[:i], line[i+1:], true
}

// Reply reads the start of a reply line: a three-digit code 100..599 followed
// by a space (last line) or a hyphen (first line of a multi-line reply).
func Reply(line []byte) (code int, more bool, ok bool) {
	if len(line) < 4 {
		return 0, false, false
	}
	c0, c1, c2 := line[0], line[1], line[2]
	if c0 < '1' || c0 > '5' || !isDigit(c1) || !isDigit(c2) {
		return 0, false, false
	}
	code = int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0')
	switch line[3] {
	case ' ':
		return code, false, true
	case '-':
		return code, true, true
	}
	return 0, false, false
}

// EndsReply reports whether line is the last line of a multi-line reply
// opened with code: the same three digits followed by a space (RFC 959 4.2).
func EndsReply(line []byte, code int) bool {
	c, more, ok := Reply(line)
	return ok && !more && c == code
}

func isLetter(b byte) bool { return (b|0x20) >= 'a' && (b|0x20) <= 'z' }
func isDigit(b byte) bool  { return b >= '0' && b <= '9' }

// number reads a strict unsigned decimal at the start of s: at most maxDigits
// digits, no sign, no leading zero unless the number is 0. It returns the
// value and the number of bytes read (0 if there is no valid number).
func number(s []byte, maxDigits int) (v int, n int) {
	for n < len(s) && isDigit(s[n]) {
		if n == maxDigits {
			return 0, 0
		}
		v = v*10 + int(s[n]-'0')
		n++
	}
	if n > 1 && s[0] == '0' {
		return 0, 0
	}
	return v, n
}
