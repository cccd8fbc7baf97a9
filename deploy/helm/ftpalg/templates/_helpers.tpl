{{/* The StatefulSet's and the control Service's name; pods are <name>-<i>. */}}
{{- define "ftpalg.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "ftpalg.labels" -}}
app.kubernetes.io/name: ftpalg
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The pool, checked: "lo hi size slice" as a space-separated string. */}}
{{- define "ftpalg.pool" -}}
{{- $pool := toString .Values.pool -}}
{{- if not (regexMatch "^[0-9]+-[0-9]+$" $pool) -}}
{{- fail (printf "pool=%q: expected lo-hi, e.g. 30000-30009" $pool) -}}
{{- end -}}
{{- $parts := regexSplit "-" $pool -1 -}}
{{- $lo := atoi (index $parts 0) -}}
{{- $hi := atoi (index $parts 1) -}}
{{- $n := int .Values.maxReplicas -}}
{{- if or (lt $lo 1024) (gt $hi 65535) (lt $hi $lo) -}}
{{- fail (printf "pool=%q: expected lo-hi within 1024-65535 with lo <= hi" $pool) -}}
{{- end -}}
{{- if or (lt $n 1) (lt (int .Values.replicas) 0) (gt (int .Values.replicas) $n) -}}
{{- fail (printf "replicas=%v, maxReplicas=%v: expected 0 <= replicas <= maxReplicas and maxReplicas >= 1" .Values.replicas .Values.maxReplicas) -}}
{{- end -}}
{{- $size := add1 (sub $hi $lo) -}}
{{- if ne (mod $size $n) 0 -}}
{{- fail (printf "pool=%q has %d ports, which do not split into %d equal slices (maxReplicas): make the pool a multiple of maxReplicas" $pool $size $n) -}}
{{- end -}}
{{- if and (eq .Values.service.type "NodePort") (or (lt $lo 30000) (gt $hi 32767)) -}}
{{- fail (printf "pool=%q: with service.type NodePort each data port is its own node port, so the pool must lie in the node port range 30000-32767" $pool) -}}
{{- end -}}
{{- $cnp := int .Values.service.controlNodePort -}}
{{- if and (eq .Values.service.type "NodePort") (ge $cnp $lo) (le $cnp $hi) -}}
{{- fail (printf "service.controlNodePort=%d lies in pool=%q: pick a node port outside the pool" $cnp $pool) -}}
{{- end -}}
{{- printf "%d %d %d %d" $lo $hi $size (div $size $n) -}}
{{- end -}}

{{/* FTPALG_PUBLIC_ADDR (see values.yaml publicAddr): the entries joined
with commas, "service" made this release's control Service. */}}
{{- define "ftpalg.publicAddr" -}}
{{- $entries := list -}}
{{- if kindIs "slice" .Values.publicAddr -}}
{{- $entries = .Values.publicAddr -}}
{{- else if .Values.publicAddr -}}
{{- $entries = splitList "," (toString .Values.publicAddr) -}}
{{- else if eq .Values.service.type "NodePort" -}}
{{- $entries = list "$(HOST_IP)" -}}
{{- else if .Values.service.loadBalancerIP -}}
{{- $entries = list .Values.service.loadBalancerIP -}}
{{- else -}}
{{- $entries = list "service" -}}
{{- end -}}
{{- $out := list -}}
{{- range $entries -}}
{{- $e := trim (toString .) -}}
{{- if eq $e "service" -}}
{{- $e = printf "service:$(POD_NAMESPACE)/%s" (include "ftpalg.fullname" $) -}}
{{- else if hasPrefix "service:" $e -}}
{{- if not (regexMatch "^service:([a-z0-9]([-a-z0-9]*[a-z0-9])?|\\$\\(POD_NAMESPACE\\))/[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $e) -}}
{{- fail (printf "publicAddr entry %q: expected service (this release's control Service) or service:NAMESPACE/NAME" $e) -}}
{{- end -}}
{{- $ns := index (splitList "/" (trimPrefix "service:" $e)) 0 -}}
{{- if not (has $ns (list "$(POD_NAMESPACE)" $.Release.Namespace)) -}}
{{- fail (printf "publicAddr entry %q: the Role the chart renders reads a Service of the release's namespace %s only; follow a Service there" $e $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- $out = append $out $e -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The Service whose address ftpalg follows, "NAMESPACE/NAME" (the
release's namespace, or "$(POD_NAMESPACE)"), or "" for none. */}}
{{- define "ftpalg.discovery" -}}
{{- range splitList "," (include "ftpalg.publicAddr" .) -}}
{{- if hasPrefix "service:" . -}}
{{- if eq $.Values.service.type "NodePort" -}}
{{- fail (printf "publicAddr %s: a NodePort Service has no load balancer address to follow; give the address, or use service.type LoadBalancer" .) -}}
{{- end -}}
{{- trimPrefix "service:" . -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What every Service of the release shares, so they share one address. */}}
{{- define "ftpalg.serviceSpec" -}}
type: {{ .Values.service.type }}
externalTrafficPolicy: {{ .Values.service.externalTrafficPolicy }}
{{- if and (eq .Values.service.type "LoadBalancer") .Values.service.loadBalancerIP }}
loadBalancerIP: {{ .Values.service.loadBalancerIP }}
{{- end }}
{{- end -}}

{{/* FTPS termination values, checked: "" (none), or "required reuse port"
with port 0 for no implicit FTPS. */}}
{{- define "ftpalg.tls" -}}
{{- $t := .Values.tls -}}
{{- $port := int $t.implicitPort -}}
{{- if not $t.secretName -}}
{{- if $port -}}
{{- fail (printf "tls.implicitPort=%d needs tls.secretName (the Secret with the certificate)" $port) -}}
{{- end -}}
{{- else -}}
{{- if not (kindIs "bool" $t.required) -}}
{{- fail (printf "tls.required=%v: expected true or false" $t.required) -}}
{{- end -}}
{{- /* YAML 1.1 reads an unquoted off as false. */ -}}
{{- $reuse := $t.sessionReuse -}}
{{- if and (kindIs "bool" $reuse) (not $reuse) -}}
{{- $reuse = "off" -}}
{{- end -}}
{{- if not (has $reuse (list "off" "required")) -}}
{{- fail (printf "tls.sessionReuse=%v: expected \"off\" or \"required\"" $reuse) -}}
{{- end -}}
{{- $pool := splitList " " (include "ftpalg.pool" .) -}}
{{- $lo := atoi (index $pool 0) -}}
{{- $hi := atoi (index $pool 1) -}}
{{- if $port -}}
{{- if or (lt $port 1) (gt $port 65535) (eq $port 21) (eq $port (int .Values.server.port)) (eq $port (int .Values.ftpalg.adminPort)) (and (ge $port $lo) (le $port $hi)) -}}
{{- fail (printf "tls.implicitPort=%d: expected 0 or a port in 1-65535 other than 21, server.port, ftpalg.adminPort and the pool %q (990 is usual)" $port (toString .Values.pool)) -}}
{{- end -}}
{{- $np := int $t.implicitNodePort -}}
{{- if and (eq .Values.service.type "NodePort") (or (eq $np (int .Values.service.controlNodePort)) (and (ge $np $lo) (le $np $hi))) -}}
{{- fail (printf "tls.implicitNodePort=%d: pick a node port outside the pool %q and other than service.controlNodePort" $np (toString .Values.pool)) -}}
{{- end -}}
{{- end -}}
{{- printf "%t %s %d" $t.required $reuse $port -}}
{{- end -}}
{{- end -}}
