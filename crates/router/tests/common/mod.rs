//! A small contact center and a driver for scenario tests: inputs in, outputs out, fake time.
#![allow(dead_code)]

use tandem_model::config::*;
use tandem_model::domain::{AgentState, LabelKind, ServiceLevelType};
use tandem_model::ids::*;
use tandem_model::input::{AfterCall, Input, OrderedInput, RouteRequest};
use tandem_model::output::{Output, RouteAnswer};
use tandem_model::script::{Node, NodeKind, Script};
use tandem_router::Router;

/// 2026-11-21T10:00:00Z: a half-hour boundary, so tests reason about periods easily.
pub const T0: u64 = 1_795_255_200_000;
pub const PG: PgId = PgId(1);
pub const PERIPHERAL: PeripheralId = PeripheralId(10);
pub const RC: RoutingClientId = RoutingClientId(1);
pub const OTHER_RC: RoutingClientId = RoutingClientId(2);
pub const SG1: SkillGroupId = SkillGroupId(100);
pub const SG2: SkillGroupId = SkillGroupId(200);
pub const A1: AgentId = AgentId(1001);
pub const A2: AgentId = AgentId(1002);
pub const A3: AgentId = AgentId(1003);
pub const A4: AgentId = AgentId(1004);
pub const CT: CallTypeId = CallTypeId(7);
pub const SERVICE: ServiceId = ServiceId(300);
pub const SCRIPT: ScriptId = ScriptId(70);
pub const DEFAULT_LABEL: LabelId = LabelId(900);
pub const DN_DEFAULT_LABEL: LabelId = LabelId(901);
pub const LABEL_A: LabelId = LabelId(902);
pub const LABEL_OTHER_RC: LabelId = LabelId(903);
pub const DIVERT_LABEL: LabelId = LabelId(904);
pub const DIGITS: &str = "8005551000";
pub const TIMEOUT_MS: u32 = 5_000;
pub const MARGIN_MS: u32 = 200;

pub fn node(id: u16, kind: NodeKind) -> Node {
    Node { id, kind }
}

/// A1 and A2 in SG1, A3 in SG1 and SG2, A4 in SG2. SG1: SL 20 s, type 1, short calls 5 s.
/// SG2: SL 30 s, type 2, no short calls. The script is the caller's.
pub fn contact_center(nodes: Vec<Node>) -> ContactCenter {
    let sg = |id, name: &str, sl_s, kind, short_s| SkillGroup {
        id,
        peripheral: PERIPHERAL,
        name: name.into(),
        service_level_threshold_s: sl_s,
        service_level_type: kind,
        abandon_short_call_threshold_s: short_s,
    };
    let agent = |id: AgentId| Agent {
        id,
        peripheral: PERIPHERAL,
        peripheral_number: format!("{}", id.0),
        name: format!("Agent {}", id.0),
        extension: format!("x{}", id.0),
    };
    let label = |id, rc, text: &str, kind| Label {
        id,
        routing_client: rc,
        label: text.into(),
        kind,
        target: None,
    };
    ContactCenter {
        settings: Settings::default(),
        pgs: vec![Pg {
            id: PG,
            name: "PG1".into(),
        }],
        peripherals: vec![Peripheral {
            id: PERIPHERAL,
            name: "ACD".into(),
            pg: PG,
        }],
        routing_clients: vec![
            RoutingClient {
                id: RC,
                name: "RC".into(),
                pg: PG,
                timeout_ms: TIMEOUT_MS,
                answer_margin_ms: MARGIN_MS,
                default_label: Some(DEFAULT_LABEL),
            },
            RoutingClient {
                id: OTHER_RC,
                name: "RC2".into(),
                pg: PG,
                timeout_ms: TIMEOUT_MS,
                answer_margin_ms: MARGIN_MS,
                default_label: None,
            },
        ],
        agents: vec![agent(A1), agent(A2), agent(A3), agent(A4)],
        skill_groups: vec![
            sg(SG1, "Sales", 20, ServiceLevelType::IgnoreAbandoned, 5),
            sg(
                SG2,
                "Support",
                30,
                ServiceLevelType::AbandonedCountAgainst,
                0,
            ),
        ],
        skill_group_members: vec![
            SkillGroupMember {
                agent: A1,
                skill_group: SG1,
            },
            SkillGroupMember {
                agent: A2,
                skill_group: SG1,
            },
            SkillGroupMember {
                agent: A3,
                skill_group: SG1,
            },
            SkillGroupMember {
                agent: A3,
                skill_group: SG2,
            },
            SkillGroupMember {
                agent: A4,
                skill_group: SG2,
            },
        ],
        services: vec![Service {
            id: SERVICE,
            peripheral: PERIPHERAL,
            name: "Svc".into(),
            service_level_threshold_s: 20,
            service_level_type: ServiceLevelType::AbandonedCountFor,
            abandon_short_call_threshold_s: 5,
        }],
        service_members: vec![ServiceMember {
            service: SERVICE,
            skill_group: SG1,
        }],
        call_types: vec![CallType {
            id: CT,
            name: "CT".into(),
            service_level_threshold_s: 20,
            service_level_type: ServiceLevelType::IgnoreAbandoned,
            abandon_short_call_threshold_s: 5,
        }],
        dialed_numbers: vec![DialedNumber {
            id: DialedNumberId(1),
            routing_client: RC,
            digits: DIGITS.into(),
            call_type: CT,
            default_label: Some(DN_DEFAULT_LABEL),
        }],
        scripts: vec![Script {
            id: SCRIPT,
            name: "S".into(),
            version: 1,
            nodes,
        }],
        call_type_maps: vec![CallTypeMap {
            call_type: CT,
            script: SCRIPT,
            priority: 0,
            from_minute: None,
            to_minute: None,
        }],
        labels: vec![
            label(DEFAULT_LABEL, RC, "rc-default", LabelKind::Normal),
            label(DN_DEFAULT_LABEL, RC, "dn-default", LabelKind::Normal),
            label(LABEL_A, RC, "label-a", LabelKind::Normal),
            label(LABEL_OTHER_RC, OTHER_RC, "other", LabelKind::Normal),
            label(DIVERT_LABEL, RC, "divert", LabelKind::Divert),
        ],
    }
}

/// Drives a router with explicit times and keeps every output.
pub struct Harness {
    pub router: Router,
    pub seq: u64,
    pub now_ms: u64,
    pub outputs: Vec<Output>,
}

impl Harness {
    pub fn new(nodes: Vec<Node>) -> Harness {
        Self::with(contact_center(nodes))
    }

    pub fn with(cc: ContactCenter) -> Harness {
        let router = Router::from_contact_center(&cc, T0).expect("valid test configuration");
        let mut h = Harness {
            router,
            seq: 0,
            now_ms: T0,
            outputs: Vec::new(),
        };
        h.input(Input::PeripheralOnline {
            peripheral: PERIPHERAL,
        });
        h
    }

    /// Applies an input at the current time; returns its outputs and checks every invariant.
    pub fn input(&mut self, input: Input) -> Vec<Output> {
        self.seq += 1;
        let out = self.router.apply(
            self.seq,
            &OrderedInput {
                time_ms: self.now_ms,
                input,
            },
        );
        self.router
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken after input {}: {e}", self.seq));
        self.outputs.extend(out.iter().cloned());
        out
    }

    /// Moves time forward by `ms` with a TimeTick every 100 ms, returning all their outputs.
    pub fn advance(&mut self, ms: u64) -> Vec<Output> {
        let end = self.now_ms + ms;
        let mut out = Vec::new();
        while self.now_ms < end {
            self.now_ms = (self.now_ms + 100).min(end);
            out.extend(self.input(Input::TimeTick));
        }
        out
    }

    pub fn login(&mut self, agent: AgentId, state: AgentState) -> Vec<Output> {
        self.input(Input::AgentLogin {
            agent,
            state,
            reason_code: 0,
        })
    }

    pub fn set_state(&mut self, agent: AgentId, state: AgentState) -> Vec<Output> {
        self.input(Input::AgentStateChange {
            agent,
            state,
            reason_code: 0,
        })
    }

    pub fn request(&mut self, id: u64) -> Vec<Output> {
        self.request_with(id, vec![])
    }

    pub fn request_with(&mut self, id: u64, call_variables: Vec<String>) -> Vec<Output> {
        self.input(Input::RouteRequest(RouteRequest {
            key: key(id),
            dialed_number: DIGITS.into(),
            ani: "02079460000".into(),
            caller_entered_digits: String::new(),
            call_variables,
        }))
    }

    pub fn state_of(&self, agent: AgentId) -> AgentState {
        self.router.state().agent_rt.get(&agent).unwrap().state
    }

    /// A call's full peripheral life: arrive in `group`, offered to `agent`, answered after
    /// `wait_ms`, talk `talk_ms`, hold `hold_ms` (inside the talk), end into wrap-up of `work_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn handled_call(
        &mut self,
        call_id: u64,
        group: SkillGroupId,
        agent: AgentId,
        wait_ms: u64,
        talk_ms: u64,
        hold_ms: u64,
        work_ms: u64,
    ) {
        let call = call_key(call_id);
        self.input(Input::CallArrived {
            call,
            skill_group: Some(group),
            call_type: Some(CT),
            service: Some(SERVICE),
            router_call_key: None,
        });
        self.now_ms += wait_ms;
        self.input(Input::CallOffered {
            call,
            agent,
            skill_group: None,
        });
        self.input(Input::CallAnswered { call });
        self.now_ms += talk_ms;
        if hold_ms > 0 {
            self.input(Input::CallHeld { call });
            self.now_ms += hold_ms;
            self.input(Input::CallRetrieved { call });
        }
        let after_call = if work_ms > 0 {
            AfterCall::WorkReady
        } else {
            AfterCall::Ready
        };
        self.input(Input::CallEnded { call, after_call });
        if work_ms > 0 {
            self.now_ms += work_ms;
            self.set_state(agent, AgentState::Ready);
        }
    }
}

pub fn key(id: u64) -> RouteRequestKey {
    RouteRequestKey {
        routing_client: RC,
        pg_incarnation: 1,
        request_id: id,
    }
}

pub fn call_key(id: u64) -> PeripheralCallKey {
    PeripheralCallKey {
        peripheral: PERIPHERAL,
        call_id: id,
    }
}

/// The first route response or delivery among `outputs` (repeats included).
pub fn answer(outputs: &[Output]) -> Option<RouteAnswer> {
    outputs.iter().find_map(|o| match o {
        Output::RouteResponse { answer, .. } | Output::DeliverQueuedCall { answer, .. } => {
            Some(answer.clone())
        }
        _ => None,
    })
}

pub fn reserved(outputs: &[Output]) -> Option<(AgentId, SkillGroupId)> {
    outputs.iter().find_map(|o| match o {
        Output::ReserveAgent {
            agent, skill_group, ..
        } => Some((*agent, *skill_group)),
        _ => None,
    })
}

/// Start -> the given node as node 1, with Label(LABEL_A) at 8 and Default at 9 available.
pub fn script_with(kind: NodeKind) -> Vec<Node> {
    vec![
        node(0, NodeKind::Start { next: 1 }),
        node(1, kind),
        node(
            8,
            NodeKind::Label {
                labels: vec![LABEL_A],
            },
        ),
        node(9, NodeKind::Default),
    ]
}
