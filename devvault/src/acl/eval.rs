//! Evaluation: a token's policies merged into one [`Acl`], and the path matcher
//! with Vault's precedence rules.

use super::*;

/// The merged rules of all of a token's policies.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    exact: BTreeMap<String, u16>,
    /// Rules ending in `*` without `+`: prefix (without the `*`) → caps.
    prefix: BTreeMap<String, u16>,
    /// Rules containing `+`.
    segment: BTreeMap<String, u16>,
}

fn merge(map: &mut BTreeMap<String, u16>, key: &str, bits: u16) {
    let e = map.entry(key.to_string()).or_insert(0);
    *e |= bits;
    if *e & cap::DENY != 0 {
        *e = cap::DENY;
    }
}

impl Acl {
    /// Builds an ACL from policies; `root` short-circuits everything.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>, root: bool) -> Acl {
        let mut acl = Acl {
            root,
            ..Default::default()
        };
        for p in policies {
            for (path, bits) in &p.paths {
                if path.contains('+') {
                    merge(&mut acl.segment, path, *bits);
                } else if let Some(pre) = path.strip_suffix('*') {
                    merge(&mut acl.prefix, pre, *bits);
                } else {
                    merge(&mut acl.exact, path, *bits);
                }
            }
        }
        acl
    }

    /// Capability bits granted on `path` (list paths carry their trailing `/`).
    pub fn capabilities(&self, path: &str, op: Op) -> u16 {
        if self.root {
            return !cap::DENY;
        }
        if let Some(b) = self.exact.get(path) {
            return *b;
        }
        if op == Op::List {
            if let Some(b) = self.exact.get(path.trim_end_matches('/')) {
                return *b;
            }
        }
        self.non_exact(path).unwrap_or(0)
    }

    /// Whether `op` on `path` is allowed.
    pub fn allowed(&self, path: &str, op: Op) -> bool {
        if self.root {
            return true;
        }
        let bits = self.capabilities(path, op);
        bits & cap::DENY == 0 && bits & op.bit() != 0
    }

    /// Whether any rule could grant something under `prefix` (hasMountAccess).
    pub fn has_any_under(&self, prefix: &str) -> bool {
        if self.root {
            return true;
        }
        let grants = |b: &u16| *b & cap::DENY == 0 && *b != 0;
        self.exact
            .iter()
            .any(|(p, b)| p.starts_with(prefix) && grants(b))
            || self.prefix.iter().any(|(p, b)| {
                (p.starts_with(prefix) || prefix.starts_with(p.as_str())) && grants(b)
            })
            || self
                .segment
                .iter()
                .any(|(rule, b)| segment_rule_reaches(rule, prefix) && grants(b))
    }

    fn non_exact(&self, path: &str) -> Option<u16> {
        let mut candidates: Vec<Candidate> = Vec::new();
        // Longest matching prefix rule.
        if let Some((pre, bits)) = self
            .prefix
            .iter()
            .filter(|(pre, _)| path.starts_with(pre.as_str()))
            .max_by_key(|(pre, _)| pre.len())
        {
            candidates.push(Candidate {
                first_wc: pre.len(),
                is_prefix: true,
                wildcards: 0,
                path: pre.clone(),
                bits: *bits,
            });
        }
        for (rule, bits) in &self.segment {
            if segment_match(rule, path) {
                let is_prefix = rule.ends_with('*');
                let first_wc = rule.find(['+', '*']).unwrap_or(rule.len());
                candidates.push(Candidate {
                    first_wc,
                    is_prefix,
                    wildcards: rule.split('/').filter(|s| *s == "+").count(),
                    path: rule.trim_end_matches('*').to_string(),
                    bits: *bits,
                });
            }
        }
        candidates
            .into_iter()
            .max_by(|a, b| a.cmp_priority(b))
            .map(|c| c.bits)
    }
}

struct Candidate {
    first_wc: usize,
    is_prefix: bool,
    wildcards: usize,
    path: String,
    bits: u16,
}

impl Candidate {
    /// Vault's precedence (docs "Priority matching"): later wildcard wins, a
    /// non-glob beats a glob, fewer `+` wins, longer wins, lexicographically larger wins.
    fn cmp_priority(&self, other: &Candidate) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        self.first_wc
            .cmp(&other.first_wc)
            .then_with(|| match (self.is_prefix, other.is_prefix) {
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => Ordering::Equal,
            })
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.path.len().cmp(&other.path.len()))
            .then_with(|| self.path.cmp(&other.path))
    }
}

/// Whether a `+` rule can match something under `mount` (Vault's
/// `CheckAllowedFromNonExactPaths` with `bareMount`): the rule's first segments match the
/// mount's segments.
fn segment_rule_reaches(rule: &str, mount: &str) -> bool {
    let rparts: Vec<&str> = rule.split('/').collect();
    let mparts: Vec<&str> = mount.trim_end_matches('/').split('/').collect();
    mparts.iter().enumerate().all(|(i, m)| match rparts.get(i) {
        Some(&"+") => true,
        Some(r) if i + 1 == rparts.len() && r.ends_with('*') => {
            m.starts_with(r.trim_end_matches('*'))
        }
        Some(r) => r == m,
        // The rule is shorter than the mount path: only a trailing glob reaches below.
        None => rparts.last().is_some_and(|r| r.ends_with('*')),
    })
}

fn segment_match(rule: &str, path: &str) -> bool {
    let rparts: Vec<&str> = rule.split('/').collect();
    let pparts: Vec<&str> = path.split('/').collect();
    let is_prefix = rule.ends_with('*');
    if is_prefix {
        if pparts.len() < rparts.len() {
            return false;
        }
    } else if pparts.len() != rparts.len() {
        return false;
    }
    let last = rparts.len() - 1;
    for (i, part) in rparts.iter().enumerate() {
        if *part == "+" {
            continue;
        }
        if i == last && is_prefix {
            let pre = part.trim_end_matches('*');
            if !pparts[i].starts_with(pre) {
                return false;
            }
            if *part == "+*" {
                continue;
            }
            continue;
        }
        if *part != pparts[i] {
            return false;
        }
    }
    true
}
