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

{{/* The address announced in 227 replies (see values.yaml publicAddr). */}}
{{- define "ftpalg.publicAddr" -}}
{{- if .Values.publicAddr -}}
{{- .Values.publicAddr -}}
{{- else if eq .Values.service.type "NodePort" -}}
$(HOST_IP)
{{- else if .Values.service.loadBalancerIP -}}
{{- .Values.service.loadBalancerIP -}}
{{- else -}}
{{- fail "publicAddr: set it (or service.loadBalancerIP) to the Service's address; discovery of the address from the Service (service:NAMESPACE/NAME) is not in this ftpalg yet" -}}
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
