//! Routing scripts as data: a graph of nodes, each naming its successors by node id.
//!
//! A script runs for a route request from its Start node until it reaches a node that answers
//! (Label, Divert, Busy, Ring, Default, End, or a Select/Queue that finds an agent), or it pauses
//! at a Wait node or in the router queue. The graph is validated when the script is configured:
//! every successor exists, every target exists, and every cycle passes through a Wait node, so a
//! script can never spin within one input.

use crate::codec::{DecodeError, Encode, Reader};
use crate::ids::{LabelId, ScriptId, SkillGroupId};
use serde::{Deserialize, Serialize};

/// A node's id within its script.
pub type NodeId = u16;

/// The most nodes one script may have.
pub const SCRIPT_NODES_MAX: usize = 1024;
/// The most targets one Select, Queue, Label or Percent Allocation node may list.
pub const NODE_TARGETS_MAX: usize = 64;
/// The longest a Queue node may hold a call before its timeout branch runs.
pub const QUEUE_TIMEOUT_S_MAX: u32 = 86_400;
/// The longest a routed call may stay in its script (waiting or queued, however the script
/// loops); after that it gets the default label, so no request is held forever.
pub const ROUTER_CALL_LIFETIME_MS_MAX: u64 = 86_400_000;
/// The deepest nesting of `All`/`Any`/`Not` in a condition.
pub const CONDITION_DEPTH_MAX: usize = 8;
/// The most nodes one route request may visit within one input before the script is declared in
/// error. Validation already forbids cycles without a Wait, so this is a second line of defence.
pub const SCRIPT_STEPS_PER_INPUT_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub id: ScriptId,
    pub name: String,
    /// Raised by every edit; calls in progress continue on the new version by node id.
    #[serde(default = "one")]
    pub version: u32,
    pub nodes: Vec<Node>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    #[serde(flatten)]
    pub kind: NodeKind,
}

/// How a Select node picks an agent among its skill groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SelectRule {
    /// The agent who has been available longest across all listed skill groups.
    LongestAvailable = 0,
    /// The skill group with the smallest expected delay; within it the longest available agent.
    MinimumExpectedDelay = 1,
    /// The first listed skill group with an available agent ("homing").
    Homing = 2,
    /// Like homing, but each call starts one skill group after the previous call's ("rotary").
    Rotary = 3,
}
crate::encode_unit_enum!(SelectRule {
    LongestAvailable,
    MinimumExpectedDelay,
    Homing,
    Rotary
});

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    Start {
        next: NodeId,
    },
    /// Branches on the call's data, the time of day or real-time values.
    If {
        condition: Condition,
        then_next: NodeId,
        else_next: NodeId,
    },
    /// Routes to an available agent in one of the skill groups, chosen by `rule`; `none_next` runs
    /// when no agent is available.
    Select {
        rule: SelectRule,
        skill_groups: Vec<SkillGroupId>,
        none_next: NodeId,
    },
    /// Routes to an available agent in the skill groups if there is one; otherwise puts the call
    /// in the router queue of each skill group with `priority` (1 highest .. 10). When
    /// `timeout_s` (1 ..= QUEUE_TIMEOUT_S_MAX) passes without an agent, the call leaves the
    /// queue and the script continues at `timeout_next`.
    Queue {
        skill_groups: Vec<SkillGroupId>,
        priority: u8,
        timeout_s: u32,
        timeout_next: NodeId,
    },
    /// Splits calls among branches in proportion to the weights, deterministically (smooth
    /// weighted round robin), so both sides and every replay split the same way.
    PercentAllocation {
        branches: Vec<Branch>,
    },
    /// Answers with the first of the labels that belongs to the call's routing client.
    Label {
        labels: Vec<LabelId>,
    },
    /// Like Label, for divert labels (e.g. to an announcement).
    Divert {
        labels: Vec<LabelId>,
    },
    /// Tells the routing client to give the caller busy treatment.
    Busy,
    /// Tells the routing client to give the caller ring-no-answer treatment.
    Ring,
    /// Answers with the dialed number's default label.
    Default,
    /// Pauses the script for `seconds` of ordered time, then continues at `next`.
    Wait {
        seconds: u32,
        next: NodeId,
    },
    /// Ends the script. A call that was not answered gets the default label.
    End,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub weight: u32,
    pub next: NodeId,
}
crate::encode_struct!(Branch { weight, next });

/// A condition of an If node. Conditions are evaluated on ordered data only, so both sides agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    /// The skill group has at least `count` agents in the Ready (available) state.
    SkillGroupAvailableAtLeast {
        skill_group: SkillGroupId,
        count: u32,
    },
    /// The skill group has at most `count` calls in the router queue.
    SkillGroupQueuedAtMost {
        skill_group: SkillGroupId,
        count: u32,
    },
    /// The caller's number starts with `prefix`.
    AniPrefix {
        prefix: String,
    },
    /// Call variable `index` (1..10) equals `value`.
    CallVariableEquals {
        index: u8,
        value: String,
    },
    /// The caller-entered digits equal `value`.
    CallerEnteredDigitsEqual {
        value: String,
    },
    /// The local time of day (minutes since local midnight) is in `[from_minute, to_minute)`;
    /// a range that wraps midnight (from > to) is allowed.
    TimeOfDayBetween {
        from_minute: u16,
        to_minute: u16,
    },
    /// The local day of the week (0 = Monday .. 6 = Sunday) is one of `days`.
    DayOfWeekIn {
        days: Vec<u8>,
    },
    All {
        conditions: Vec<Condition>,
    },
    Any {
        conditions: Vec<Condition>,
    },
    Not {
        condition: Box<Condition>,
    },
}

impl Condition {
    pub fn depth(&self) -> usize {
        match self {
            Condition::All { conditions } | Condition::Any { conditions } => {
                1 + conditions.iter().map(Condition::depth).max().unwrap_or(0)
            }
            Condition::Not { condition } => 1 + condition.depth(),
            _ => 1,
        }
    }

    /// Visits this condition and every condition nested in it.
    pub fn visit(&self, f: &mut impl FnMut(&Condition)) {
        f(self);
        match self {
            Condition::All { conditions } | Condition::Any { conditions } => {
                conditions.iter().for_each(|c| c.visit(f))
            }
            Condition::Not { condition } => condition.visit(f),
            _ => {}
        }
    }
}

impl NodeKind {
    /// The successors of this node, in a fixed order.
    pub fn successors(&self) -> Vec<NodeId> {
        match self {
            NodeKind::Start { next } | NodeKind::Wait { next, .. } => vec![*next],
            NodeKind::If {
                then_next,
                else_next,
                ..
            } => vec![*then_next, *else_next],
            NodeKind::Select { none_next, .. } => vec![*none_next],
            NodeKind::Queue { timeout_next, .. } => vec![*timeout_next],
            NodeKind::PercentAllocation { branches } => branches.iter().map(|b| b.next).collect(),
            NodeKind::Label { .. }
            | NodeKind::Divert { .. }
            | NodeKind::Busy
            | NodeKind::Ring
            | NodeKind::Default
            | NodeKind::End => Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Start { .. } => "Start",
            NodeKind::If { .. } => "If",
            NodeKind::Select { .. } => "Select",
            NodeKind::Queue { .. } => "Queue",
            NodeKind::PercentAllocation { .. } => "PercentAllocation",
            NodeKind::Label { .. } => "Label",
            NodeKind::Divert { .. } => "Divert",
            NodeKind::Busy => "Busy",
            NodeKind::Ring => "Ring",
            NodeKind::Default => "Default",
            NodeKind::Wait { .. } => "Wait",
            NodeKind::End => "End",
        }
    }
}

impl Script {
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        // Nodes are kept sorted by id (validation checks it), so a binary search finds them.
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn start(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Start { .. }))
            .map(|n| n.id)
    }

    /// Checks the graph's own shape: sorted unique node ids, one Start, existing successors,
    /// bounded sizes, sane parameters, and no cycle that avoids every Wait node. Targets (skill
    /// groups, labels) are checked against the configuration by the caller.
    pub fn check_graph(&self) -> Result<(), String> {
        let what = format!("script {} ({:?})", self.id, self.name);
        if self.nodes.is_empty() || self.nodes.len() > SCRIPT_NODES_MAX {
            return Err(format!(
                "{what} has {} nodes; it needs 1..={SCRIPT_NODES_MAX}",
                self.nodes.len()
            ));
        }
        for pair in self.nodes.windows(2) {
            if pair[0].id >= pair[1].id {
                return Err(format!(
                    "{what}: node ids must be unique and ascending (node {} after node {})",
                    pair[1].id, pair[0].id
                ));
            }
        }
        let starts = self
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Start { .. }))
            .count();
        if starts != 1 {
            return Err(format!(
                "{what} has {starts} Start nodes; it needs exactly one"
            ));
        }
        for node in &self.nodes {
            self.check_node(node)
                .map_err(|e| format!("{what}, node {}: {e}", node.id))?;
        }
        self.check_cycles().map_err(|e| format!("{what}: {e}"))
    }

    fn check_node(&self, node: &Node) -> Result<(), String> {
        for next in node.kind.successors() {
            if self.node(next).is_none() {
                return Err(format!("{} names unknown node {next}", node.kind.name()));
            }
        }
        match &node.kind {
            NodeKind::Select { skill_groups, .. } | NodeKind::Queue { skill_groups, .. }
                if skill_groups.is_empty() || skill_groups.len() > NODE_TARGETS_MAX =>
            {
                Err(format!("needs 1..={NODE_TARGETS_MAX} skill groups"))
            }
            NodeKind::Queue { priority, .. } if !(1..=10).contains(priority) => {
                Err(format!("priority {priority} is outside 1..=10"))
            }
            NodeKind::Queue { timeout_s, .. } if !(1..=QUEUE_TIMEOUT_S_MAX).contains(timeout_s) => {
                Err(format!(
                    "queue timeout of {timeout_s} s is outside 1..={QUEUE_TIMEOUT_S_MAX}"
                ))
            }
            NodeKind::Label { labels } | NodeKind::Divert { labels }
                if labels.is_empty() || labels.len() > NODE_TARGETS_MAX =>
            {
                Err(format!("needs 1..={NODE_TARGETS_MAX} labels"))
            }
            NodeKind::PercentAllocation { branches }
                if branches.is_empty()
                    || branches.len() > NODE_TARGETS_MAX
                    || branches.iter().all(|b| b.weight == 0) =>
            {
                Err(format!(
                    "needs 1..={NODE_TARGETS_MAX} branches with a positive total weight"
                ))
            }
            NodeKind::Wait { seconds: 0, .. } => Err("a Wait of 0 seconds never waits".into()),
            NodeKind::If { condition, .. } => check_condition(condition),
            _ => Ok(()),
        }
    }

    /// Every cycle must pass through a Wait node: removing the Wait nodes must leave a DAG.
    fn check_cycles(&self) -> Result<(), String> {
        // Iterative three-colour depth-first search over non-Wait nodes.
        #[derive(Clone, Copy, PartialEq)]
        enum Colour {
            White,
            Grey,
            Black,
        }
        let index = |id: NodeId| self.nodes.binary_search_by_key(&id, |n| n.id).ok();
        let mut colour = vec![Colour::White; self.nodes.len()];
        for root in 0..self.nodes.len() {
            if colour[root] != Colour::White {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            colour[root] = Colour::Grey;
            while let Some(&mut (at, ref mut child)) = stack.last_mut() {
                let node = &self.nodes[at];
                let successors = if matches!(node.kind, NodeKind::Wait { .. }) {
                    Vec::new()
                } else {
                    node.kind.successors()
                };
                if *child < successors.len() {
                    let next = successors[*child];
                    *child += 1;
                    let Some(next_index) = index(next) else {
                        continue;
                    };
                    match colour[next_index] {
                        Colour::Grey => {
                            return Err(format!(
                                "node {} leads back to node {next} without passing a Wait node",
                                node.id
                            ))
                        }
                        Colour::White => {
                            colour[next_index] = Colour::Grey;
                            stack.push((next_index, 0));
                        }
                        Colour::Black => {}
                    }
                } else {
                    colour[at] = Colour::Black;
                    stack.pop();
                }
            }
        }
        Ok(())
    }
}

fn check_condition(condition: &Condition) -> Result<(), String> {
    if condition.depth() > CONDITION_DEPTH_MAX {
        return Err(format!(
            "condition is nested deeper than {CONDITION_DEPTH_MAX}"
        ));
    }
    let mut error = None;
    condition.visit(&mut |c| match c {
        Condition::CallVariableEquals { index, .. } if !(1..=10).contains(index) => {
            error = Some(format!("call variable {index} is outside 1..=10"))
        }
        Condition::TimeOfDayBetween {
            from_minute,
            to_minute,
        } if *from_minute >= 1440 || *to_minute > 1440 => {
            error = Some("time of day minutes must be below 1440".into())
        }
        Condition::DayOfWeekIn { days } if days.iter().any(|d| *d > 6) => {
            error = Some("days of the week are 0 (Monday) ..= 6 (Sunday)".into())
        }
        Condition::All { conditions } | Condition::Any { conditions }
            if conditions.is_empty() || conditions.len() > NODE_TARGETS_MAX =>
        {
            error = Some(format!("All/Any need 1..={NODE_TARGETS_MAX} conditions"))
        }
        _ => {}
    });
    error.map_or(Ok(()), Err)
}

// State-record encoding of scripts. Scripts are configuration and travel in state transfers.

impl Encode for Condition {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Condition::SkillGroupAvailableAtLeast { skill_group, count } => {
                out.push(0);
                skill_group.encode(out);
                count.encode(out);
            }
            Condition::SkillGroupQueuedAtMost { skill_group, count } => {
                out.push(1);
                skill_group.encode(out);
                count.encode(out);
            }
            Condition::AniPrefix { prefix } => {
                out.push(2);
                prefix.encode(out);
            }
            Condition::CallVariableEquals { index, value } => {
                out.push(3);
                index.encode(out);
                value.encode(out);
            }
            Condition::CallerEnteredDigitsEqual { value } => {
                out.push(4);
                value.encode(out);
            }
            Condition::TimeOfDayBetween {
                from_minute,
                to_minute,
            } => {
                out.push(5);
                from_minute.encode(out);
                to_minute.encode(out);
            }
            Condition::DayOfWeekIn { days } => {
                out.push(6);
                days.encode(out);
            }
            Condition::All { conditions } => {
                out.push(7);
                conditions.encode(out);
            }
            Condition::Any { conditions } => {
                out.push(8);
                conditions.encode(out);
            }
            Condition::Not { condition } => {
                out.push(9);
                condition.encode(out);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            Condition::SkillGroupAvailableAtLeast { .. }
            | Condition::SkillGroupQueuedAtMost { .. } => 8,
            Condition::AniPrefix { prefix } => prefix.encoded_len(),
            Condition::CallVariableEquals { value, .. } => 1 + value.encoded_len(),
            Condition::CallerEnteredDigitsEqual { value } => value.encoded_len(),
            Condition::TimeOfDayBetween { .. } => 4,
            Condition::DayOfWeekIn { days } => days.encoded_len(),
            Condition::All { conditions } | Condition::Any { conditions } => {
                conditions.encoded_len()
            }
            Condition::Not { condition } => condition.encoded_len(),
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_condition(reader, 0)
    }
}

fn decode_condition(reader: &mut Reader<'_>, depth: usize) -> Result<Condition, DecodeError> {
    // Bounding the depth keeps a hostile record from overflowing the stack.
    if depth > CONDITION_DEPTH_MAX {
        return Err(DecodeError::Invalid("condition nested too deeply"));
    }
    let decode_list = |reader: &mut Reader<'_>| -> Result<Vec<Condition>, DecodeError> {
        let len = u32::decode(reader)? as usize;
        if len > NODE_TARGETS_MAX {
            return Err(DecodeError::TooLong {
                what: "condition list",
                len,
                max: NODE_TARGETS_MAX,
            });
        }
        (0..len)
            .map(|_| decode_condition(reader, depth + 1))
            .collect()
    };
    Ok(match u8::decode(reader)? {
        0 => Condition::SkillGroupAvailableAtLeast {
            skill_group: Encode::decode(reader)?,
            count: Encode::decode(reader)?,
        },
        1 => Condition::SkillGroupQueuedAtMost {
            skill_group: Encode::decode(reader)?,
            count: Encode::decode(reader)?,
        },
        2 => Condition::AniPrefix {
            prefix: Encode::decode(reader)?,
        },
        3 => Condition::CallVariableEquals {
            index: Encode::decode(reader)?,
            value: Encode::decode(reader)?,
        },
        4 => Condition::CallerEnteredDigitsEqual {
            value: Encode::decode(reader)?,
        },
        5 => Condition::TimeOfDayBetween {
            from_minute: Encode::decode(reader)?,
            to_minute: Encode::decode(reader)?,
        },
        6 => Condition::DayOfWeekIn {
            days: Encode::decode(reader)?,
        },
        7 => Condition::All {
            conditions: decode_list(reader)?,
        },
        8 => Condition::Any {
            conditions: decode_list(reader)?,
        },
        9 => Condition::Not {
            condition: Box::new(decode_condition(reader, depth + 1)?),
        },
        tag => {
            return Err(DecodeError::InvalidTag {
                type_name: "Condition",
                tag: tag as u32,
            })
        }
    })
}

impl Encode for NodeKind {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            NodeKind::Start { next } => {
                out.push(0);
                next.encode(out);
            }
            NodeKind::If {
                condition,
                then_next,
                else_next,
            } => {
                out.push(1);
                condition.encode(out);
                then_next.encode(out);
                else_next.encode(out);
            }
            NodeKind::Select {
                rule,
                skill_groups,
                none_next,
            } => {
                out.push(2);
                rule.encode(out);
                skill_groups.encode(out);
                none_next.encode(out);
            }
            NodeKind::Queue {
                skill_groups,
                priority,
                timeout_s,
                timeout_next,
            } => {
                out.push(3);
                skill_groups.encode(out);
                priority.encode(out);
                timeout_s.encode(out);
                timeout_next.encode(out);
            }
            NodeKind::PercentAllocation { branches } => {
                out.push(4);
                branches.encode(out);
            }
            NodeKind::Label { labels } => {
                out.push(5);
                labels.encode(out);
            }
            NodeKind::Divert { labels } => {
                out.push(6);
                labels.encode(out);
            }
            NodeKind::Busy => out.push(7),
            NodeKind::Ring => out.push(8),
            NodeKind::Default => out.push(9),
            NodeKind::Wait { seconds, next } => {
                out.push(10);
                seconds.encode(out);
                next.encode(out);
            }
            NodeKind::End => out.push(11),
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            NodeKind::Start { .. } => 2,
            NodeKind::If { condition, .. } => condition.encoded_len() + 4,
            NodeKind::Select { skill_groups, .. } => 1 + skill_groups.encoded_len() + 2,
            NodeKind::Queue { skill_groups, .. } => skill_groups.encoded_len() + 1 + 4 + 2,
            NodeKind::PercentAllocation { branches } => branches.encoded_len(),
            NodeKind::Label { labels } | NodeKind::Divert { labels } => labels.encoded_len(),
            NodeKind::Busy | NodeKind::Ring | NodeKind::Default | NodeKind::End => 0,
            NodeKind::Wait { .. } => 6,
        }
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match u8::decode(reader)? {
            0 => NodeKind::Start {
                next: Encode::decode(reader)?,
            },
            1 => NodeKind::If {
                condition: Encode::decode(reader)?,
                then_next: Encode::decode(reader)?,
                else_next: Encode::decode(reader)?,
            },
            2 => NodeKind::Select {
                rule: Encode::decode(reader)?,
                skill_groups: Encode::decode(reader)?,
                none_next: Encode::decode(reader)?,
            },
            3 => NodeKind::Queue {
                skill_groups: Encode::decode(reader)?,
                priority: Encode::decode(reader)?,
                timeout_s: Encode::decode(reader)?,
                timeout_next: Encode::decode(reader)?,
            },
            4 => NodeKind::PercentAllocation {
                branches: Encode::decode(reader)?,
            },
            5 => NodeKind::Label {
                labels: Encode::decode(reader)?,
            },
            6 => NodeKind::Divert {
                labels: Encode::decode(reader)?,
            },
            7 => NodeKind::Busy,
            8 => NodeKind::Ring,
            9 => NodeKind::Default,
            10 => NodeKind::Wait {
                seconds: Encode::decode(reader)?,
                next: Encode::decode(reader)?,
            },
            11 => NodeKind::End,
            tag => {
                return Err(DecodeError::InvalidTag {
                    type_name: "NodeKind",
                    tag: tag as u32,
                })
            }
        })
    }
}

crate::encode_struct!(Node { id, kind });
crate::encode_struct!(Script {
    id,
    name,
    version,
    nodes
});

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, kind: NodeKind) -> Node {
        Node { id, kind }
    }

    fn script(nodes: Vec<Node>) -> Script {
        Script {
            id: ScriptId(1),
            name: "s".into(),
            version: 1,
            nodes,
        }
    }

    #[test]
    fn loop_without_wait_is_rejected() {
        let s = script(vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::Select {
                    rule: SelectRule::Homing,
                    skill_groups: vec![SkillGroupId(1)],
                    none_next: 1,
                },
            ),
        ]);
        let err = s.check_graph().unwrap_err();
        assert!(err.contains("without passing a Wait"), "{err}");
    }

    #[test]
    fn loop_through_wait_is_accepted() {
        let s = script(vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::Select {
                    rule: SelectRule::Homing,
                    skill_groups: vec![SkillGroupId(1)],
                    none_next: 2,
                },
            ),
            node(
                2,
                NodeKind::Wait {
                    seconds: 5,
                    next: 1,
                },
            ),
        ]);
        s.check_graph().unwrap();
    }

    #[test]
    fn unknown_successor_is_named() {
        let s = script(vec![node(0, NodeKind::Start { next: 9 })]);
        let err = s.check_graph().unwrap_err();
        assert!(err.contains("unknown node 9"), "{err}");
    }

    #[test]
    fn encoding_round_trips() {
        let s = script(vec![
            node(0, NodeKind::Start { next: 1 }),
            node(
                1,
                NodeKind::If {
                    condition: Condition::All {
                        conditions: vec![
                            Condition::AniPrefix {
                                prefix: "44".into(),
                            },
                            Condition::Not {
                                condition: Box::new(Condition::DayOfWeekIn { days: vec![5, 6] }),
                            },
                        ],
                    },
                    then_next: 2,
                    else_next: 3,
                },
            ),
            node(2, NodeKind::Busy),
            node(
                3,
                NodeKind::PercentAllocation {
                    branches: vec![Branch { weight: 3, next: 2 }, Branch { weight: 1, next: 4 }],
                },
            ),
            node(4, NodeKind::End),
        ]);
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), s.encoded_len());
        assert_eq!(Script::from_bytes(&bytes).unwrap(), s);
    }
}
