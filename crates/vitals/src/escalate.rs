//! From detections to at most one 119 call per event: the in-car confirmation window, the driver's
//! cancel, and the merging of everything raised during one emergency.
//!
//! A detection that calls 119 opens an *event* (unless one is open) and prompts the driver; when the
//! window passes without a cancel, the event is called. Detections while an event is open or within
//! `merge_s` after its last detection join it — an arrest raises asystole, then loss of
//! responsiveness, then perhaps asystole again, and that is one call. After a cancel, the kinds the
//! driver dismissed stay quiet for `merge_s`, but a new kind opens a new event: dismissing a false
//! tachycardia must not hide the arrest that follows. AF only advises the driver.
//!
//! Pure and driven by car time: the service calls [`Escalator::tick`] as time passes.

use crate::driver::{Detection, EventKind};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EscalationRules {
    pub confirm_s: f64,
    pub merge_s: f64,
}

impl Default for EscalationRules {
    fn default() -> Self {
        EscalationRules {
            confirm_s: 15.0,
            merge_s: 600.0,
        }
    }
}

/// What the service must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Ask the driver to confirm; call at `deadline_s` unless cancelled. `onset_s` names the event.
    Prompt {
        onset_s: f64,
        kind: EventKind,
        deadline_s: f64,
    },
    /// Tell the driver (AF); no call.
    Advise { kind: EventKind, raised_s: f64 },
    /// Call 119 for the event (exactly once), with every kind it raised so far.
    Call {
        onset_s: f64,
        kind: EventKind,
        kinds: Vec<EventKind>,
        at_s: f64,
    },
    /// The driver dismissed the prompt.
    Cancelled { onset_s: f64, kind: EventKind },
}

#[derive(Clone, Debug)]
struct Open {
    onset_s: f64,
    kind: EventKind,
    kinds: Vec<EventKind>,
    deadline_s: f64,
    last_s: f64,
    called: bool,
}

/// One driver's escalation state.
#[derive(Clone, Debug, Default)]
pub struct Escalator {
    pub rules: EscalationRules,
    open: Option<Open>,
    /// Kinds the driver dismissed, and when the dismissal lapses.
    dismissed: Vec<(EventKind, f64)>,
}

impl Escalator {
    pub fn new(rules: EscalationRules) -> Escalator {
        Escalator {
            rules,
            ..Escalator::default()
        }
    }

    /// Whether an event is waiting for the driver's answer.
    pub fn prompting(&self) -> bool {
        self.open.as_ref().is_some_and(|o| !o.called)
    }

    pub fn detection(&mut self, d: &Detection) -> Vec<Action> {
        let t = d.raised_s;
        if !d.kind.calls_119() {
            return vec![Action::Advise {
                kind: d.kind,
                raised_s: t,
            }];
        }
        self.dismissed.retain(|&(_, until)| until > t);
        if let Some(o) = self.open.as_mut() {
            if !o.called || t - o.last_s <= self.rules.merge_s {
                o.last_s = t;
                if !o.kinds.contains(&d.kind) {
                    o.kinds.push(d.kind);
                }
                return Vec::new();
            }
        }
        if self.dismissed.iter().any(|&(k, _)| k == d.kind) {
            return Vec::new();
        }
        let deadline_s = t + self.rules.confirm_s;
        self.open = Some(Open {
            onset_s: d.onset_s,
            kind: d.kind,
            kinds: vec![d.kind],
            deadline_s,
            last_s: t,
            called: false,
        });
        vec![Action::Prompt {
            onset_s: d.onset_s,
            kind: d.kind,
            deadline_s,
        }]
    }

    /// The driver pressed cancel at `t`: the prompt in progress (if any) is dismissed.
    pub fn cancel(&mut self, t: f64) -> Option<Action> {
        let o = self.open.take_if(|o| !o.called && t < o.deadline_s)?;
        for &k in &o.kinds {
            self.dismissed.push((k, t + self.rules.merge_s));
        }
        Some(Action::Cancelled {
            onset_s: o.onset_s,
            kind: o.kind,
        })
    }

    /// Time has reached `t`: the call, if a window has just passed.
    pub fn tick(&mut self, t: f64) -> Option<Action> {
        let o = self.open.as_mut()?;
        if o.called {
            if t - o.last_s > self.rules.merge_s {
                self.open = None;
            }
            return None;
        }
        if t < o.deadline_s {
            return None;
        }
        o.called = true;
        Some(Action::Call {
            onset_s: o.onset_s,
            kind: o.kind,
            kinds: o.kinds.clone(),
            at_s: t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(kind: EventKind, t: f64) -> Detection {
        Detection {
            kind,
            onset_s: t - 4.0,
            raised_s: t,
        }
    }

    #[test]
    fn one_call_per_event_cancel_and_a_new_kind_after_a_dismissal() {
        let mut e = Escalator::default();
        let a = e.detection(&det(EventKind::Asystole, 100.0));
        assert!(matches!(a[..], [Action::Prompt { deadline_s, .. }] if deadline_s == 115.0));
        assert!(e.detection(&det(EventKind::Unresponsive, 110.0)).is_empty());
        assert_eq!(e.tick(114.9), None);
        let call = e.tick(115.0).unwrap();
        assert_eq!(
            call,
            Action::Call {
                onset_s: 96.0,
                kind: EventKind::Asystole,
                kinds: vec![EventKind::Asystole, EventKind::Unresponsive],
                at_s: 115.0
            }
        );
        // Everything for ten minutes after the last detection is the same event.
        assert!(e.detection(&det(EventKind::Asystole, 400.0)).is_empty());
        assert_eq!(e.tick(900.0), None);
        assert_eq!(e.tick(1001.0), None);
        // Later, a new event.
        assert_eq!(e.detection(&det(EventKind::Bradycardia, 2000.0)).len(), 1);
        // The driver cancels: no call; the same kind stays quiet, a new kind prompts.
        assert!(matches!(e.cancel(2005.0), Some(Action::Cancelled { .. })));
        assert_eq!(e.tick(2100.0), None);
        assert!(e.detection(&det(EventKind::Bradycardia, 2200.0)).is_empty());
        assert_eq!(e.detection(&det(EventKind::Asystole, 2300.0)).len(), 1);
        assert_eq!(e.cancel(2400.0), None, "too late to cancel");
        assert!(matches!(e.tick(2400.0), Some(Action::Call { .. })));
        // AF advises only.
        assert!(matches!(
            e.detection(&det(EventKind::AtrialFibrillation, 5000.0))[..],
            [Action::Advise { .. }]
        ));
    }
}
