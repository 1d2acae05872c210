{{/* Pieces of networkpolicy.yaml. */}}

{{- define "agentmesh.np.peer" -}}
- podSelector:
    matchLabels:
      {{- include "agentmesh.selectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "agentmesh.np.dns" -}}
- to:
    - namespaceSelector: {}
      {{- with .Values.networkPolicy.dns.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end -}}

{{- define "agentmesh.np.etcdEgress" -}}
{{- if include "agentmesh.etcdExternal" . -}}
- ports:
    {{- range .Values.networkPolicy.externalEtcd.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.externalEtcd.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- else -}}
- to:
    {{- include "agentmesh.np.peer" (dict "root" . "component" "etcd") | nindent 4 }}
  ports:
    - protocol: TCP
      port: 2379
{{- end }}
{{- end -}}
