//! The domain catalogue: what each role worries about, and how it knows a proposal has
//! settled the worry.
//!
//! Every [`Concern`] has an id, trigger keywords (it applies when the task mentions any
//! of them; an empty list means it always applies), the `requirement` sentence a proposal
//! must contain for the concern to count as addressed, and optional `forbids` phrases that
//! must not appear in the proposal. The prose a role writes about a concern in its
//! analysis (`note`) and the implementation sketch it contributes later (`how`) are kept
//! apart from the requirement, so that a proposal built from analyses alone does not
//! settle anything by accident.
//!
//! The six default specialists have hand-written catalogues; any other role gets a
//! generic one derived from its name ([`catalogue`]).

use crate::text::first_mention;

/// At most this many concerns apply per role and task: a reviewer pushes its most
/// important points, in catalogue order, and names the rest as deferred.
pub const MAX_CONCERNS_PER_ROLE: usize = 3;

/// One thing a role needs a proposal to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concern {
    /// Short, unique, `role`-prefixed id, e.g. `be-idempotency`.
    pub id: String,
    /// A few words for prose: "idempotent writes".
    pub title: String,
    /// The concern applies if the task mentions any of these; empty = always applies.
    pub triggers: Vec<String>,
    /// Why it matters, as a role would put it in its analysis. Never the requirement.
    pub note: String,
    /// The sentence the proposal text must contain for the concern to be addressed.
    pub requirement: String,
    /// How to implement the requirement, contributed when answering an objection.
    pub how: String,
    /// Phrases the proposal must not contain while this concern is to be met.
    pub forbids: Vec<String>,
    /// What the role argues when the requirement is contradicted by another decision.
    pub stance: String,
}

/// Why a concern applies to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    /// The concern has no triggers: every design needs it.
    Always,
    /// The task mentions this trigger keyword.
    Mentioned(String),
}

impl Concern {
    /// Whether, and why, the concern applies to `task`.
    pub fn applies_to(&self, task: &str) -> Option<Applies> {
        if self.triggers.is_empty() {
            return Some(Applies::Always);
        }
        first_mention(task, &self.triggers).map(|k| Applies::Mentioned(k.to_string()))
    }

    /// Whether `proposal` settles the concern, and if not, why.
    pub fn check(&self, proposal: &str) -> Check {
        let present = crate::text::contains_normalized(proposal, &self.requirement);
        let contradicted_by = self
            .forbids
            .iter()
            .find(|phrase| crate::text::contains_normalized(proposal, phrase))
            .cloned();
        match (present, contradicted_by) {
            (true, None) => Check::Met,
            (false, None) => Check::Missing,
            (_, Some(phrase)) => Check::Contradicted(phrase),
        }
    }

    /// The review concern that states this concern is unmet, in [`crate::objection`] form.
    pub fn objection(&self, check: &Check) -> Option<String> {
        match check {
            Check::Met => None,
            Check::Missing => Some(crate::objection::format(&self.id, &self.requirement, None)),
            Check::Contradicted(phrase) => Some(crate::objection::format(
                &self.id,
                &self.requirement,
                Some(phrase),
            )),
        }
    }
}

/// The outcome of checking one concern against a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The requirement is present and nothing forbidden is.
    Met,
    /// The requirement sentence is not in the proposal.
    Missing,
    /// The proposal contains this forbidden phrase.
    Contradicted(String),
}

struct Spec {
    id: &'static str,
    title: &'static str,
    triggers: &'static [&'static str],
    note: &'static str,
    requirement: &'static str,
    how: &'static str,
    forbids: &'static [&'static str],
    stance: &'static str,
}

const DEFAULT_STANCE: &str = "I cannot sign a version that states both; one of the two \
requirements has to be relaxed by the task owner.";

impl Spec {
    fn build(&self) -> Concern {
        Concern {
            id: self.id.to_string(),
            title: self.title.to_string(),
            triggers: self.triggers.iter().map(|s| s.to_string()).collect(),
            note: self.note.to_string(),
            requirement: self.requirement.to_string(),
            how: self.how.to_string(),
            forbids: self.forbids.iter().map(|s| s.to_string()).collect(),
            stance: if self.stance.is_empty() {
                DEFAULT_STANCE.to_string()
            } else {
                self.stance.to_string()
            },
        }
    }
}

const BACKEND: &[Spec] = &[
    Spec {
        id: "be-errors",
        title: "error contract",
        triggers: &[],
        note: "Clients and operators both need failures they can act on; nothing yet fixes how errors are shaped, coded or correlated with logs.",
        requirement: "Every API error returns a stable machine-readable code, a human-readable message and the request id, and the code list is published with the interface.",
        how: "One error middleware maps domain errors to {code, message, request_id}; the code list lives next to the OpenAPI document and CI fails on an undocumented code.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "be-idempotency",
        title: "idempotent writes",
        triggers: &[
            "order", "payment", "checkout", "booking", "transfer", "create", "submit",
        ],
        note: "Clients retry on timeouts and flaky networks, so any write that lands twice would duplicate its side effects.",
        requirement: "Every mutating endpoint accepts an Idempotency-Key header and returns the original response when a key is replayed within 24 hours.",
        how: "Keys are stored with a hash of the request and the response in a table keyed by (tenant, key) with a 24-hour TTL; a replay with a different body gets 422.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "be-pagination",
        title: "bounded list and search endpoints",
        triggers: &["search", "list", "history", "browse", "feed", "catalog"],
        note: "List and search endpoints over data that only grows will time out sooner or later if they return everything or page by offset.",
        requirement: "List and search endpoints use opaque cursor pagination with a maximum page size of 100.",
        how: "The cursor encodes the last (sort key, id) pair, base64url-encoded and signed; a page size above 100 is clamped, not rejected.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "be-versioning",
        title: "interface versioning",
        triggers: &[
            "api",
            "rest",
            "graphql",
            "grpc",
            "public",
            "mobile",
            "partner",
            "integration",
        ],
        note: "Consumers outside this team will pin to the interface, so an unplanned breaking change later becomes an outage for them.",
        requirement: "The API is versioned in its path, and breaking changes ship only under a new version that runs alongside the old one for six months.",
        how: "Routes are mounted under /v1; a contract-diff check in CI flags breaking changes, which must go to /v2 with a deprecation header on /v1.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "be-async",
        title: "slow side effects off the request path",
        triggers: &[
            "email",
            "notification",
            "webhook",
            "import",
            "export",
            "report",
            "batch",
        ],
        note: "Notifications, exports and other slow side work would otherwise sit in the request path and make every write as slow as its slowest side effect.",
        requirement: "Slow side effects run in a durable job queue with at-least-once delivery, idempotent handlers and a dead-letter queue.",
        how: "Jobs are enqueued in the same transaction as the write (outbox table) and drained by workers; poisoned jobs land in a dead-letter table with an alert.",
        forbids: &[],
        stance: "",
    },
];

const FRONTEND: &[Spec] = &[
    Spec {
        id: "fe-a11y",
        title: "accessibility",
        triggers: &[],
        note: "Staff will use the interface all day and customers on whatever device they have; accessibility is cheap to design in and expensive to retrofit.",
        requirement: "All screens meet WCAG 2.1 AA, verified by automated accessibility checks in CI and a manual keyboard-only pass before each release.",
        how: "axe-core runs in the component and end-to-end tests; the release checklist has a keyboard-only walkthrough of every primary flow.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "fe-states",
        title: "loading, empty and error states",
        triggers: &[
            "dashboard",
            "ui",
            "web",
            "app",
            "page",
            "screen",
            "portal",
            "frontend",
        ],
        note: "Every data view will sometimes be empty, slow or failing, and nothing says yet what users see then or how support can trace what went wrong.",
        requirement: "Every data view defines explicit loading, empty and error states, and a failed request shows its request id to the user.",
        how: "A shared DataView component takes the query state and renders skeleton, empty and error variants; the error variant shows the request id with a copy button.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "fe-realtime",
        title: "live updates",
        triggers: &["live", "real-time", "realtime", "tracking", "notification"],
        note: "Users following a status will expect changes to appear without reloading, and a reload loop would hammer the backend.",
        requirement: "Status changes reach open clients through server-sent events, with polling every 30 seconds as the fallback.",
        how: "One SSE endpoint per tenant streams change events with a Last-Event-ID resume; the client falls back to polling after two failed reconnects.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "fe-perf",
        title: "page weight and speed",
        triggers: &["dashboard", "web", "mobile", "storefront", "portal"],
        note: "A dashboard tends to grow until it is slow on the devices people actually use; a budget is only real if something enforces it.",
        requirement: "The initial load stays within a 200 KB gzipped JavaScript budget and a Largest Contentful Paint under 2.5 seconds on a mid-range phone, enforced in CI.",
        how: "A bundle-size check and a Lighthouse CI run on every merge request fail the build when the budget is exceeded.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "fe-i18n",
        title: "localisation",
        triggers: &[
            "international",
            "global",
            "locale",
            "language",
            "countries",
            "multi-region",
        ],
        note: "The audience spans languages and regions, so hard-coded strings and formats would have to be rewritten later.",
        requirement: "All user-facing text comes from translation catalogues, and dates, numbers and currencies are formatted per user locale.",
        how: "Strings are extracted with ICU message syntax; the Intl APIs format values from the locale in the user profile.",
        forbids: &[],
        stance: "",
    },
];

const SECURITY: &[Spec] = &[
    Spec {
        id: "sec-authz",
        title: "authorization model",
        triggers: &[],
        note: "Nothing yet says who may do what; broken access control is the most common hole in designs like this one.",
        requirement: "Authorization is enforced server-side on every request with deny-by-default role checks, and every permission rule is covered by tests.",
        how: "A policy module evaluates (subject, action, resource) before every handler; a table-driven test suite lists each role and action with the expected decision.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "sec-airgap",
        title: "air gap",
        triggers: &[
            "air-gapped",
            "air gapped",
            "airgapped",
            "offline",
            "classified",
            "disconnected",
        ],
        note: "The environment is meant to be sealed from the internet; any path that reaches out, even to fetch software, breaks the accreditation.",
        requirement: "The cluster runs with no internet egress from workloads or nodes, and every artifact enters through the audited import gateway.",
        how: "Default-deny egress network policies and firewall rules; images are scanned, signed and copied into the internal registry by the import gateway.",
        forbids: &["pull images from public registries"],
        stance: "Upstream patches can still arrive through the import gateway on a fixed daily schedule; I will not sign any version that lets nodes reach the internet.",
    },
    Spec {
        id: "sec-tenancy",
        title: "tenant isolation",
        triggers: &["multi-tenant", "tenant", "saas"],
        note: "With several customers in one system, a single forgotten filter leaks one customer's data to another.",
        requirement: "Tenant isolation is enforced in the data layer with row-level security on the tenant id, never by application filters alone.",
        how: "Every tenant-owned table has a tenant_id column and a row-level security policy; the connection sets the tenant from the verified token before any query.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "sec-secrets",
        title: "secret handling",
        triggers: &[
            "kubernetes",
            "k8s",
            "cloud",
            "cluster",
            "container",
            "deploy",
        ],
        note: "Credentials tend to end up in manifests, images or CI logs unless the design gives them one place to live.",
        requirement: "Secrets live only in the secrets manager, are injected at runtime, never appear in images or manifests, and rotate at least every 90 days.",
        how: "The external-secrets operator syncs from the secrets manager into the pod at start; a CI scanner blocks commits and images that contain credentials.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "sec-pii",
        title: "personal data",
        triggers: &[
            "customer", "personal", "pii", "patient", "health", "gdpr", "payment",
        ],
        note: "The system will hold data about people, which needs protection in storage and in logs, and a way to delete it on request.",
        requirement: "Personal data is encrypted at rest, masked in logs, and deleted per person within 30 days of a verified request.",
        how: "Storage encryption with managed keys, a log redaction filter on known fields, and a deletion job that works through a per-person request queue.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "sec-audit",
        title: "audit trail",
        triggers: &[
            "audit",
            "compliance",
            "regulated",
            "defence",
            "defense",
            "financial",
            "bank",
        ],
        note: "Regulators and incident responders will ask who changed what and when; that answer has to exist before the first incident.",
        requirement: "Every administrative and data-changing action is written to an append-only audit log that is retained for one year.",
        how: "Handlers emit audit events through the outbox into write-once storage; the retention policy is set on the bucket, not in application code.",
        forbids: &[],
        stance: "",
    },
];

const ARCHITECT: &[Spec] = &[
    Spec {
        id: "arch-boundaries",
        title: "component boundaries",
        triggers: &[],
        note: "Without agreed boundaries and owners, each specialist's decisions will quietly contradict the others' and nobody will own the seams.",
        requirement: "The system is split into named components with one owner each, and components talk only through the interfaces documented in this proposal.",
        how: "The proposal's architecture section names each component and owner; an import-lint rule fails the build on a dependency that skips a documented interface.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "arch-events",
        title: "state changes as events",
        triggers: &[
            "status",
            "event",
            "workflow",
            "tracking",
            "webhook",
            "integration",
        ],
        note: "Several parts of the system react to the same state changes; letting them read each other's tables couples them for good.",
        requirement: "State changes are published as versioned domain events through a transactional outbox, and no component reads another component's tables.",
        how: "Writes append to an outbox table in the same transaction; a relay publishes to the event bus with the schema version in a header.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "arch-modular",
        title: "deployment granularity",
        triggers: &["service", "microservice", "platform"],
        note: "It is tempting to start with many services; neither the team size nor the expected load here pays for that operational cost yet.",
        requirement: "The first release ships as a modular monolith with enforced module boundaries, and a module is split out only when it needs independent scaling or release cadence.",
        how: "One deployable with one module per component; module APIs are the only public surface, checked by the same import-lint rule.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "arch-degradation",
        title: "failure behaviour",
        triggers: &["availability", "sla", "uptime", "critical", "peak", "scale"],
        note: "Dependencies will fail independently, and the design does not yet say which features survive which outage.",
        requirement: "Each component states its availability target and how it degrades when a dependency is down, instead of failing whole requests.",
        how: "A dependency table per component with timeout, retry budget and fallback; chaos tests in staging cut each dependency once per release.",
        forbids: &[],
        stance: "",
    },
];

const DEVOPS: &[Spec] = &[
    Spec {
        id: "ops-observability",
        title: "observability and SLOs",
        triggers: &[],
        note: "When this breaks at night, on-call needs to see where and why; that means telemetry designed in, and alerts tied to what users feel.",
        requirement: "Every component emits structured logs, RED metrics and traces that share a request id, and each user-facing flow has an SLO with an error-budget burn alert.",
        how: "OpenTelemetry SDKs in every component, exported to the shared collector; SLOs defined as code with multi-window burn-rate alerts.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "ops-public-images",
        title: "image supply",
        triggers: &[
            "public registry",
            "docker hub",
            "upstream image",
            "upstream",
        ],
        note: "Operations wants patched upstream images to reach the nodes without a manual step, because manual imports are where patching falls behind.",
        requirement: "Nodes pull images from public registries at deploy time so that every rollout picks up upstream security patches.",
        how: "Image references track the upstream patch tag; the rollout controller resolves the tag to a digest at deploy time and records it.",
        forbids: &["no internet egress"],
        stance: "A manual import step is exactly where patching falls behind; I will not sign a version that cuts nodes off from the upstream registries.",
    },
    Spec {
        id: "ops-delivery",
        title: "delivery pipeline",
        triggers: &[
            "kubernetes",
            "k8s",
            "deploy",
            "deployment",
            "cluster",
            "container",
            "docker",
        ],
        note: "Deployments by hand or from mutable tags make every rollout a gamble and every rollback slow.",
        requirement: "Deployments use CI-built immutable images, a progressive rollout with automatic rollback on SLO breach, and declarative manifests kept in git.",
        how: "CI builds and signs one image per commit; Argo Rollouts runs a canary gated on the SLO metrics; manifests are reconciled from git.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "ops-backups",
        title: "backups and restore",
        triggers: &["postgresql", "postgres", "mysql", "database", "stateful"],
        note: "A backup nobody has restored is a hope, not a backup, and the design does not yet say how much data we may lose.",
        requirement: "Databases have point-in-time recovery with a 15-minute recovery point objective, and restores are rehearsed monthly in staging.",
        how: "Continuous WAL archiving to object storage plus nightly base backups; a monthly job restores into staging and runs smoke checks.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "ops-iac",
        title: "infrastructure as code",
        triggers: &[
            "cloud",
            "aws",
            "gcp",
            "azure",
            "terraform",
            "infrastructure",
        ],
        note: "Infrastructure clicked together in a console drifts and cannot be reviewed or rebuilt.",
        requirement: "All infrastructure is declared in Terraform and applied only by the pipeline, with the plan output attached to every change review.",
        how: "One Terraform root per environment, remote state with locking, and a pipeline job that posts the plan to the merge request.",
        forbids: &[],
        stance: "",
    },
];

const DATABASE: &[Spec] = &[
    Spec {
        id: "db-migrations",
        title: "schema evolution",
        triggers: &[],
        note: "The schema will change while old and new code run side by side during a rollout; an incompatible change then breaks one of them.",
        requirement: "Schema changes ship as forward-only, backward-compatible migrations using expand and contract, applied by the pipeline before the code that needs them.",
        how: "Versioned migration files run by a pre-deploy job; a column rename is add, backfill, switch reads, then drop in a later release.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "db-indexes",
        title: "query paths",
        triggers: &["search", "query", "report", "filter", "lookup", "history"],
        note: "Search and history views turn into full scans as the data grows unless each access path is planned with the schema.",
        requirement: "Every query path in the interfaces section has a supporting index, and any query slower than 100 ms at p95 is reviewed before release.",
        how: "pg_stat_statements feeds a weekly slow-query report; each endpoint's query has an EXPLAIN plan checked into the repository.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "db-integrity",
        title: "invariants in the schema",
        triggers: &[
            "order",
            "payment",
            "inventory",
            "booking",
            "account",
            "ledger",
            "status",
        ],
        note: "The data has rules that must never be broken, whatever code path or script touches it.",
        requirement: "Data invariants are enforced by the database with foreign keys, check constraints and unique constraints, not only in application code.",
        how: "Status values are an enum with a check constraint on allowed transitions; foreign keys are declared, not implied.",
        forbids: &[],
        stance: "",
    },
    Spec {
        id: "db-retention",
        title: "data retention",
        triggers: &[
            "history",
            "analytics",
            "archive",
            "retention",
            "events",
            "logs",
        ],
        note: "Historical data grows without bound, and nothing says yet how long it is kept or how it is removed.",
        requirement: "Historical and event data is partitioned by month with a written retention period, and expired partitions are dropped by a scheduled job.",
        how: "Native range partitioning by month; a scheduled job detaches and drops partitions past retention after exporting them to cold storage.",
        forbids: &[],
        stance: "",
    },
];

/// The built-in catalogue of a role, or `None` for a role without one.
fn builtin(role: &str) -> Option<&'static [Spec]> {
    Some(match role {
        "backend" => BACKEND,
        "frontend" => FRONTEND,
        "security" => SECURITY,
        "architect" => ARCHITECT,
        "devops" => DEVOPS,
        "database" => DATABASE,
        _ => return None,
    })
}

/// Words in a role name that say nothing about its domain.
const GENERIC_WORDS: [&str; 12] = [
    "engineer",
    "engineering",
    "lead",
    "specialist",
    "expert",
    "team",
    "owner",
    "manager",
    "dev",
    "developer",
    "eng",
    "architect",
];

/// The domain words of a role name: "ml-engineer" → ["ml"].
pub fn domain_words(role: &str) -> Vec<String> {
    let words: Vec<String> = role
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let specific: Vec<String> = words
        .iter()
        .filter(|w| !GENERIC_WORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    if specific.is_empty() { words } else { specific }
}

/// Domain words that read as acronyms in prose.
const ACRONYMS: [&str; 8] = ["api", "sre", "iot", "llm", "seo", "sql", "gpu", "etl"];

/// The domain of a role name as prose: "ml-engineer" → "ML", "data_platform" →
/// "data platform".
pub fn domain_of(role: &str) -> String {
    domain_words(role)
        .iter()
        .map(|w| {
            if w.len() <= 2 || ACRONYMS.contains(&w.as_str()) {
                w.to_uppercase()
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The generic catalogue of a role without a built-in one, derived from its name.
fn generic(role: &str) -> Vec<Concern> {
    let words = domain_words(role);
    let domain = domain_of(role);
    vec![
        Concern {
            id: format!("{role}-owner"),
            title: format!("ownership of the {domain} work"),
            triggers: Vec::new(),
            note: format!(
                "Nothing in the framework says which part of the design carries the {domain} \
                 work, so it risks falling between components with nobody accountable."
            ),
            requirement: format!(
                "The {domain} work is assigned to a named component with one owner and a \
                 documented interface to the rest of the system."
            ),
            how: format!(
                "The architecture section lists the {domain} component, its owner and the \
                 interface it offers; changes to that interface go through {role} review."
            ),
            forbids: Vec::new(),
            stance: DEFAULT_STANCE.to_string(),
        },
        Concern {
            id: format!("{role}-acceptance"),
            title: format!("{domain} acceptance checks"),
            triggers: Vec::new(),
            note: format!(
                "The {domain} side has quality criteria of its own that nobody will check \
                 unless they are written down and automated."
            ),
            requirement: format!(
                "Release readiness includes {domain} acceptance criteria written as \
                 automated checks that block the rollout when they fail."
            ),
            how: format!(
                "The {role} keeps a suite of acceptance checks with explicit thresholds; the \
                 release pipeline runs it and stops the rollout on a failure."
            ),
            forbids: Vec::new(),
            stance: DEFAULT_STANCE.to_string(),
        },
        Concern {
            id: format!("{role}-lifecycle"),
            title: format!("{domain} lifecycle"),
            triggers: words.clone(),
            note: format!(
                "The task itself calls out {domain}, so that part will change after launch \
                 more often than the rest; it needs versioning and monitoring from the start."
            ),
            requirement: format!(
                "Every {domain} artefact is versioned, its production behaviour is monitored \
                 against a stated baseline, and a rollback to the previous version takes one \
                 pipeline run."
            ),
            how: format!(
                "{domain} artefacts are stored with immutable versions and metadata; a \
                 dashboard compares live metrics with the baseline and the pipeline can \
                 redeploy the previous version."
            ),
            forbids: Vec::new(),
            stance: DEFAULT_STANCE.to_string(),
        },
    ]
}

/// Every concern of `role`: its built-in catalogue, or the generic one derived from its
/// name. The supervisor has none (it reviews structure, not domain content).
pub fn catalogue(role: &str) -> Vec<Concern> {
    if role == agentmesh_core::SUPERVISOR {
        return Vec::new();
    }
    match builtin(role) {
        Some(specs) => specs.iter().map(Spec::build).collect(),
        None => generic(role),
    }
}

/// The concerns of `role` that apply to `task`, in catalogue order, split into the ones
/// the role pushes (at most [`MAX_CONCERNS_PER_ROLE`]) and the ones it defers.
pub fn applicable(role: &str, task: &str) -> (Vec<(Concern, Applies)>, Vec<Concern>) {
    let mut pushed = Vec::new();
    let mut deferred = Vec::new();
    for concern in catalogue(role) {
        if let Some(why) = concern.applies_to(task) {
            if pushed.len() < MAX_CONCERNS_PER_ROLE {
                pushed.push((concern, why));
            } else {
                deferred.push(concern);
            }
        }
    }
    (pushed, deferred)
}

/// The concerns `role` pushes for `task`: the first part of [`applicable`].
pub fn concerns_for(role: &str, task: &str) -> Vec<Concern> {
    applicable(role, task)
        .0
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Looks a concern up by id in `role`'s catalogue.
pub fn find(role: &str, id: &str) -> Option<Concern> {
    catalogue(role).into_iter().find(|c| c.id == id)
}

/// A one-line description of what a role looks after, for the framework.
pub fn focus(role: &str) -> String {
    match role {
        agentmesh_core::SUPERVISOR => {
            "frames the task, writes every proposal version, reviews its structure".into()
        }
        "backend" => "API contracts, write semantics, background work".into(),
        "frontend" => "user flows, UI states, accessibility and performance budgets".into(),
        "security" => "access control, isolation, secrets, data protection".into(),
        "architect" => "component boundaries, coupling, failure behaviour".into(),
        "devops" => "delivery, observability, recovery".into(),
        "database" => "schema, integrity, query paths, retention".into(),
        other => format!(
            "the {} perspective: ownership, acceptance and lifecycle",
            domain_of(other)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{contains_normalized, normalize};

    fn all_roles() -> Vec<&'static str> {
        agentmesh_core::DEFAULT_SPECIALISTS.to_vec()
    }

    #[test]
    fn ids_are_unique_and_prefixed_sensibly() {
        let mut seen = std::collections::BTreeSet::new();
        for role in all_roles().into_iter().chain(["ml-engineer"]) {
            let cat = catalogue(role);
            assert!(cat.len() >= 3, "{role} has a thin catalogue");
            assert!(
                cat.iter().any(|c| c.triggers.is_empty()),
                "{role} needs at least one concern that always applies"
            );
            for c in cat {
                assert!(seen.insert(c.id.clone()), "duplicate id {}", c.id);
                assert!(
                    crate::objection::parse(&format!("[{}] x", c.id))
                        .id
                        .is_some()
                );
                assert!(c.requirement.ends_with('.'));
            }
        }
    }

    #[test]
    fn prose_never_settles_or_contradicts_anything() {
        let cats: Vec<Concern> = all_roles()
            .into_iter()
            .chain(["ml-engineer"])
            .flat_map(catalogue)
            .collect();
        let forbidden: Vec<&String> = cats.iter().flat_map(|c| &c.forbids).collect();
        for c in &cats {
            for other in &cats {
                for prose in [&c.note, &c.title, &c.how, &c.stance] {
                    assert!(
                        !contains_normalized(prose, &other.requirement),
                        "prose of {} contains the requirement of {}",
                        c.id,
                        other.id
                    );
                }
            }
            for phrase in &forbidden {
                for prose in [&c.note, &c.title, &c.how, &c.stance] {
                    assert!(
                        !normalize(prose).contains(&normalize(phrase)),
                        "prose of {} contains the forbidden phrase {phrase:?}",
                        c.id
                    );
                }
            }
        }
    }

    #[test]
    fn the_conflicting_pair_rules_each_other_out() {
        let airgap = find("security", "sec-airgap").unwrap();
        let images = find("devops", "ops-public-images").unwrap();
        // Missing and contradicted at once reports the contradiction.
        assert_eq!(
            images.check(&airgap.requirement),
            Check::Contradicted("no internet egress".into())
        );
        assert_eq!(images.check("nothing relevant"), Check::Missing);
        let both = format!("{}\n{}", airgap.requirement, images.requirement);
        assert!(matches!(airgap.check(&both), Check::Contradicted(_)));
        assert!(matches!(images.check(&both), Check::Contradicted(_)));
        assert_eq!(airgap.check(&airgap.requirement), Check::Met);
        assert_eq!(images.check(&images.requirement), Check::Met);
    }

    #[test]
    fn applicability_is_computed_from_the_task() {
        let (pushed, _) = applicable("backend", "a tiny static site");
        assert_eq!(
            pushed
                .iter()
                .map(|(c, _)| c.id.as_str())
                .collect::<Vec<_>>(),
            ["be-errors"]
        );
        assert_eq!(pushed[0].1, Applies::Always);
        let (pushed, deferred) = applicable(
            "backend",
            "customers create orders, search history, REST API, email notifications",
        );
        assert_eq!(pushed.len(), MAX_CONCERNS_PER_ROLE);
        assert_eq!(pushed[1].1, Applies::Mentioned("order".into()));
        assert_eq!(
            deferred.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["be-versioning", "be-async"]
        );
    }

    #[test]
    fn generic_roles_derive_from_their_name() {
        assert_eq!(domain_words("ml-engineer"), ["ml"]);
        assert_eq!(domain_words("data_platform_lead"), ["data", "platform"]);
        assert_eq!(domain_words("engineer"), ["engineer"]);
        assert_eq!(domain_of("ml-engineer"), "ML");
        assert_eq!(domain_of("data_platform_lead"), "data platform");
        assert_eq!(domain_of("sre"), "SRE");
        let ids: Vec<String> = concerns_for("ml-engineer", "score payments with an ML model")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            ids,
            [
                "ml-engineer-owner",
                "ml-engineer-acceptance",
                "ml-engineer-lifecycle"
            ]
        );
        let ids = concerns_for("ml-engineer", "a plain web form");
        assert_eq!(ids.len(), 2);
        assert!(catalogue(agentmesh_core::SUPERVISOR).is_empty());
    }
}
