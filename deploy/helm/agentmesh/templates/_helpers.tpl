{{/* ---------------------------------------------------------------- names */}}

{{- define "agentmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentmesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agentmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The objects of one role: <fullname>-worker-<role>, '_' spelled '-' (names are DNS
labels). Collisions and names over 63 characters are refused in agentmesh.validate. */}}
{{- define "agentmesh.workerName" -}}
{{- printf "%s-worker-%s" (include "agentmesh.fullname" .root) (.role | replace "_" "-") -}}
{{- end -}}

{{- define "agentmesh.coordinatorName" -}}
{{- printf "%s-coordinator" (include "agentmesh.fullname" .) -}}
{{- end -}}

{{- define "agentmesh.etcdName" -}}
{{- printf "%s-etcd" (include "agentmesh.fullname" .) -}}
{{- end -}}

{{- define "agentmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentmesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* --------------------------------------------------------------- labels
Called with (dict "root" $ "component" "worker" "role" "backend"); role is optional. */}}

{{- define "agentmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .role }}
agentmesh.io/role: {{ .role | quote }}
{{- end }}
{{- end -}}

{{- define "agentmesh.labels" -}}
{{ include "agentmesh.selectorLabels" . }}
app.kubernetes.io/part-of: agentmesh
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "agentmesh.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* --------------------------------------------------------------- images
(dict "root" $ "image" .Values.coordinator.image) */}}
{{- define "agentmesh.image" -}}
{{- $registry := .image.registry | default .root.Values.images.registry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "agentmesh.pullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.images.pullPolicy -}}
{{- end -}}


{{/* ----------------------------------------------------- security contexts
Every pod and every container: non-root, read-only root, no capabilities, no privilege
escalation, the runtime's default seccomp profile. */}}
{{- define "agentmesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "agentmesh.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* (dict "root" $ "component" "coordinator" "mode" "soft") : a default pod
anti-affinity over node names. */}}
{{- define "agentmesh.antiAffinity" -}}
{{- if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "agentmesh.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- else if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "agentmesh.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
{{- end }}
{{- end -}}

{{/* ------------------------------------------------------------- durations
A duration as mesh-worker / mesh-coordinator read it (500ms, 90s, 2m, or a bare number of
seconds) in seconds, as a float. */}}
{{- define "agentmesh.seconds" -}}
{{- $t := toString . | trim -}}
{{- if hasSuffix "ms" $t -}}
{{- divf (trimSuffix "ms" $t | float64) 1000 -}}
{{- else if hasSuffix "m" $t -}}
{{- mulf (trimSuffix "m" $t | float64) 60 -}}
{{- else -}}
{{- trimSuffix "s" $t | float64 -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------ etcd */}}
{{- define "agentmesh.etcdExternal" -}}
{{- if .Values.etcd.external.endpoints }}true{{ end -}}
{{- end -}}

{{/* http or https, as agentmesh talks to etcd (etcd.tls). */}}
{{- define "agentmesh.etcdScheme" -}}
{{- if .Values.etcd.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{/* The client URLs of every etcd member, comma-separated. */}}
{{- define "agentmesh.etcdEndpoints" -}}
{{- if include "agentmesh.etcdExternal" . -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- else -}}
{{- $name := include "agentmesh.etcdName" . -}}
{{- $scheme := include "agentmesh.etcdScheme" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-%d.%s.%s.svc.%s:2379" $scheme $name $i $name $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end -}}

{{/* The coordinators' and workers' etcd client Secret (ca.crt, tls.crt, tls.key). */}}
{{- define "agentmesh.etcdClientSecretName" -}}
{{- .Values.etcd.tls.clientSecretName | default (printf "%s-etcd-client" (include "agentmesh.fullname" .)) -}}
{{- end -}}

{{/* The bundled etcd members' Secret (ca.crt, tls.crt, tls.key). */}}
{{- define "agentmesh.etcdServerSecretName" -}}
{{- .Values.etcd.tls.serverSecretName | default (printf "%s-etcd-server" (include "agentmesh.fullname" .)) -}}
{{- end -}}

{{/* How coordinators and workers reach etcd, shared by both: the flags, the environment,
the mounts and the volumes of etcd.tls and etcd.external.auth. */}}
{{- define "agentmesh.etcdClientArgs" -}}
{{- if .Values.etcd.tls.enabled }}
- --etcd-ca=/etc/agentmesh/etcd/ca.crt
{{- if .Values.etcd.tls.clientCertificate }}
- --etcd-cert=/etc/agentmesh/etcd/tls.crt
- --etcd-key=/etc/agentmesh/etcd/tls.key
{{- end }}
{{- end }}
{{- if .Values.etcd.external.auth.secretName }}
- --etcd-password-file=/etc/agentmesh/etcd-auth/password
{{- end }}
{{- end -}}

{{- define "agentmesh.etcdClientEnv" -}}
{{- with .Values.etcd.external.auth }}
{{- if .secretName }}
# The etcd user's name; the password is a file (--etcd-password-file).
- name: MESH_ETCD_USER
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .usernameKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "agentmesh.etcdClientMounts" -}}
{{- if .Values.etcd.tls.enabled }}
- name: etcd-tls
  mountPath: /etc/agentmesh/etcd
  readOnly: true
{{- end }}
{{- if .Values.etcd.external.auth.secretName }}
- name: etcd-auth
  mountPath: /etc/agentmesh/etcd-auth
  readOnly: true
{{- end }}
{{- end -}}

{{- define "agentmesh.etcdClientVolumes" -}}
{{- if .Values.etcd.tls.enabled }}
# etcd's CA and the client certificate: never the members' own key.
- name: etcd-tls
  secret:
    secretName: {{ include "agentmesh.etcdClientSecretName" . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
      {{- if .Values.etcd.tls.clientCertificate }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- end }}
{{- end }}
{{- with .Values.etcd.external.auth }}
{{- if .secretName }}
- name: etcd-auth
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - key: {{ .passwordKey }}
        path: password
{{- end }}
{{- end }}
{{- end -}}

{{/* The Issuer of etcd's certificates: etcd.tls.certManager.issuerRef, else the
coordinators' (tls.certManager.issuerRef). */}}
{{- define "agentmesh.etcdIssuerRef" -}}
{{- $ref := .Values.etcd.tls.certManager.issuerRef -}}
{{- if not $ref.name -}}
{{- $ref = .Values.tls.certManager.issuerRef -}}
{{- end -}}
{{- if not $ref.name -}}
{{- fail "etcd.tls.certManager.enabled needs etcd.tls.certManager.issuerRef.name (or tls.certManager.issuerRef.name): an Issuer or ClusterIssuer of cert-manager signing etcd's certificates" -}}
{{- end -}}
{{- toJson $ref -}}
{{- end -}}

{{/* ----------------------------------------------------------------- roles
Every enabled role with its effective settings: workerDefaults deep-merged with the
role's own, and the global autoscaling merged with the role's `autoscaling`. JSON of
{role: settings}. (Sprig's merge functions treat 0 and false as "unset", which would
lose `replicas: 0` or `enabled: false`; agentmesh.deepMerge does not.) */}}
{{- define "agentmesh.deepMerge" -}}
{{- $dst := deepCopy .dst -}}
{{- range $k, $v := .src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) -}}
{{- $_ := set $dst $k (include "agentmesh.deepMerge" (dict "dst" (get $dst $k) "src" $v) | fromJson) -}}
{{- else if kindIs "invalid" $v -}}
{{- $_ := unset $dst $k -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $dst -}}
{{- end -}}

{{- define "agentmesh.roles" -}}
{{- $out := dict -}}
{{- $as := pick .Values.autoscaling "enabled" "kind" "minReplicas" "maxReplicas" -}}
{{- range $role, $own := .Values.roles -}}
{{- $r := include "agentmesh.deepMerge" (dict "dst" (omit $.Values.workerDefaults "autoscaling") "src" (omit ($own | default dict) "autoscaling")) | fromJson -}}
{{- $_ := set $r "autoscaling" (include "agentmesh.deepMerge" (dict "dst" $as "src" (($own | default dict).autoscaling | default dict)) | fromJson) -}}
{{- if $r.enabled -}}
{{- $_ := set $out $role $r -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* ----------------------------------------------------------- autoscaling
The label matchers that pick this release's coordinators' series. */}}
{{- define "agentmesh.prometheusSelector" -}}
{{- $sel := .Values.autoscaling.prometheus.selector | default "" | trim | trimSuffix "," -}}
{{- if $sel -}}
{{- $sel -}}
{{- else -}}
{{- printf "namespace=%q,service=%q" .Release.Namespace (include "agentmesh.coordinatorName" .) -}}
{{- end -}}
{{- end -}}

{{/* THE demand query of a role: the sessions holding a worker of the role plus those
waiting for one (state="assigned" and state="waiting" summed), 0 when the coordinators
report none. Every autoscaler and every document of the chart takes the query from here.
(dict "root" $ "role" "backend") */}}
{{- define "agentmesh.demandQuery" -}}
{{- printf "sum(agentmesh_role_sessions{%s,role=%q}) or vector(0)" (include "agentmesh.prometheusSelector" .root) .role -}}
{{- end -}}

{{/* The same query as a prometheus-adapter external rule sees it: the HPA's selector
(role, and this release's coordinators) arrives as <<.LabelMatchers>>, with the
namespace the adapter adds. Derived from agentmesh.demandQuery, so the two cannot drift. */}}
{{- define "agentmesh.adapterMetricsQuery" -}}
{{- $q := include "agentmesh.demandQuery" (dict "root" . "role" "ROLE") -}}
{{- $matchers := printf "%s,role=%q" (include "agentmesh.prometheusSelector" .) "ROLE" -}}
{{- replace $matchers "<<.LabelMatchers>>" $q -}}
{{- end -}}

{{/* The HPA's External metric selector: the equality matchers of the selector, without
namespace (the adapter matches the HPA's namespace itself), and the role. */}}
{{- define "agentmesh.hpaMatchLabels" -}}
{{- $labels := dict -}}
{{- range $m := splitList "," (include "agentmesh.prometheusSelector" .root) -}}
{{- $m = trim $m -}}
{{- if not (regexMatch "^[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"]*\"$" $m) -}}
{{- fail (printf "autoscaling.kind hpa: autoscaling.prometheus.selector may hold only equality matchers like job=\"x\" (an HPA selects External metrics by matchLabels), not %s" $m) -}}
{{- end -}}
{{- $kv := regexSplit "=" $m 2 -}}
{{- if ne (index $kv 0) "namespace" -}}
{{- $_ := set $labels (index $kv 0) (index $kv 1 | trimPrefix "\"" | trimSuffix "\"") -}}
{{- end -}}
{{- end -}}
{{- $_ := set $labels "role" .role -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* The Secret with the auth file and the tokens. */}}
{{- define "agentmesh.authSecretName" -}}
{{- .Values.auth.secretName | default (printf "%s-auth" (include "agentmesh.fullname" .)) -}}
{{- end -}}

{{/* The coordinators' TLS Secret. */}}
{{- define "agentmesh.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "agentmesh.fullname" .)) -}}
{{- end -}}

{{/* The name clients check the coordinators' certificate against. */}}
{{- define "agentmesh.tlsServerName" -}}
{{- .Values.tls.serverName | default (printf "%s.%s.svc" (include "agentmesh.coordinatorName" .) .Release.Namespace) -}}
{{- end -}}

{{/* http or https, as the coordinators serve. */}}
{{- define "agentmesh.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}
