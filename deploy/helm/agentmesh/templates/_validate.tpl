{{/*
Checks that need the merged settings (workerDefaults + a role's own, the global
autoscaling + a role's), which values.schema.json cannot see. Each failure names the
value to change. Included once, from worker-deployments.yaml.
*/}}
{{- define "agentmesh.validate" -}}
{{- $roles := include "agentmesh.roles" . | fromJson -}}
{{- $fullname := include "agentmesh.fullname" . -}}
{{- $phase := include "agentmesh.seconds" .Values.coordinator.phaseTimeout | float64 -}}
{{- $pending := include "agentmesh.seconds" .Values.coordinator.pendingTimeout | float64 -}}
{{- $coldStart := include "agentmesh.seconds" .Values.autoscaling.coldStart | float64 -}}
{{- $names := dict -}}
{{- if not $roles -}}
{{- fail "roles: no role is enabled; a session needs at least a supervisor" -}}
{{- end -}}
{{- range $role, $r := $roles -}}
{{- $name := include "agentmesh.workerName" (dict "root" $ "role" $role) -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "roles.%s: the role's object name %q is longer than 63 characters; use a shorter role name or fullnameOverride" $role $name) -}}
{{- end -}}
{{- if hasKey $names $name -}}
{{- fail (printf "roles.%s and roles.%s both name their objects %q ('_' is spelled '-' in object names); rename one" (get $names $name) $role $name) -}}
{{- end -}}
{{- $_ := set $names $name $role -}}
{{- $b := $r.brain -}}
{{- $http := has $b.kind (list "openai" "anthropic") -}}
{{- if and $http (not ($b.model | default "" | trim)) -}}
{{- fail (printf "roles.%s.brain.model: brain.kind %s needs a model" $role $b.kind) -}}
{{- end -}}
{{- if not $http -}}
{{- range $k := list "model" "baseUrl" "apiKeySecret" "temperature" "maxTokens" "responseFormat" -}}
{{- if hasKey $b $k -}}
{{- fail (printf "roles.%s.brain.%s is only used with brain.kind openai or anthropic, not %s" $role $k $b.kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $b "responseFormat") (ne $b.kind "openai") -}}
{{- fail (printf "roles.%s.brain.responseFormat is only used with brain.kind openai" $role) -}}
{{- end -}}
{{- if and (eq $b.kind "exec") (not $b.exec) -}}
{{- fail (printf "roles.%s.brain.exec: brain.kind exec needs the command to run" $role) -}}
{{- end -}}
{{- if and (hasKey $b "exec") (ne $b.kind "exec") -}}
{{- fail (printf "roles.%s.brain.exec is only used with brain.kind exec" $role) -}}
{{- end -}}
{{- if and (hasKey $b "thinkMs") (ne $b.kind "scripted") -}}
{{- fail (printf "roles.%s.brain.thinkMs is only used with brain.kind scripted" $role) -}}
{{- end -}}
{{- if and $r.persona.text $r.persona.configMap -}}
{{- fail (printf "roles.%s.persona: give text or configMap, not both" $role) -}}
{{- end -}}
{{- $turn := include "agentmesh.seconds" $b.turnTimeout | float64 -}}
{{- if le $phase $turn -}}
{{- fail (printf "coordinator.phaseTimeout (%s) must be longer than roles.%s.brain.turnTimeout (%s): a phase waits for its slowest turn" $.Values.coordinator.phaseTimeout $role $b.turnTimeout) -}}
{{- end -}}
{{- $a := $r.autoscaling -}}
{{- if $a.enabled -}}
{{- if lt (int $a.maxReplicas) (int $a.minReplicas) -}}
{{- fail (printf "roles.%s: autoscaling.maxReplicas (%v) is below autoscaling.minReplicas (%v)" $role $a.maxReplicas $a.minReplicas) -}}
{{- end -}}
{{- if lt (int $a.maxReplicas) 1 -}}
{{- fail (printf "roles.%s: autoscaling.maxReplicas must be at least 1" $role) -}}
{{- end -}}
{{- if and (eq $a.kind "hpa") (lt (int $a.minReplicas) 1) -}}
{{- fail (printf "roles.%s: autoscaling.kind hpa cannot scale to zero (minReplicas 0 needs the HPAScaleToZero alpha feature gate); use minReplicas >= 1 or kind keda" $role) -}}
{{- end -}}
{{- if and (eq $a.kind "keda") (eq (int $a.minReplicas) 0) (le $pending $coldStart) -}}
{{- fail (printf "coordinator.pendingTimeout (%s) must be longer than autoscaling.coldStart (%s) while roles.%s may scale to zero: its first session waits in PENDING until a worker starts" $.Values.coordinator.pendingTimeout $.Values.autoscaling.coldStart $role) -}}
{{- end -}}
{{- if eq $a.kind "hpa" -}}
{{- $_ := include "agentmesh.hpaMatchLabels" (dict "root" $ "role" $role) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not (include "agentmesh.etcdExternal" .)) (not (has (int .Values.etcd.replicas) (list 1 3 5 7))) -}}
{{- fail "etcd.replicas must be 1, 3, 5 or 7" -}}
{{- end -}}
{{- include "agentmesh.validateEtcd" . -}}
{{- end -}}

{{/* etcd.external and etcd.tls fit together: https:// endpoints with TLS settings,
http:// without; users and the members' Secret only where they apply. */}}
{{- define "agentmesh.validateEtcd" -}}
{{- $tls := .Values.etcd.tls -}}
{{- $external := include "agentmesh.etcdExternal" . -}}
{{- range $i, $url := .Values.etcd.external.endpoints -}}
{{- if and (hasPrefix "https://" $url) (not $tls.enabled) -}}
{{- fail (printf "etcd.external.endpoints[%d] is https:// (%s): set etcd.tls.enabled=true and etcd.tls.clientSecretName, a Secret with etcd's CA (ca.crt) and the client certificate (tls.crt, tls.key; etcd.tls.clientCertificate=false if your etcd wants none)" $i $url) -}}
{{- end -}}
{{- if and (hasPrefix "http://" $url) $tls.enabled -}}
{{- fail (printf "etcd.external.endpoints[%d] is http:// (%s) but etcd.tls.enabled is true: give every endpoint as https://" $i $url) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.etcd.external.auth.secretName (not $external) -}}
{{- fail "etcd.external.auth is for an etcd of your own (etcd.external.endpoints): the bundled etcd runs without users" -}}
{{- end -}}
{{- if and $tls.serverSecretName $external -}}
{{- fail "etcd.tls.serverSecretName is the bundled etcd members' Secret: with etcd.external only etcd.tls.clientSecretName is used" -}}
{{- end -}}
{{- if and $tls.enabled (not $external) (not $tls.clientCertificate) -}}
{{- fail "etcd.tls.clientCertificate=false is for an etcd of your own: the bundled etcd requires client certificates" -}}
{{- end -}}
{{- if and $tls.certManager.enabled (not $tls.enabled) -}}
{{- fail "etcd.tls.certManager.enabled needs etcd.tls.enabled=true" -}}
{{- end -}}
{{- end -}}
