//! Route `vars` expressions: APISIX's lua-resty-expr language (`[var, op, value]`,
//! `[var, "!", op, value]`, nested `AND`/`OR`/`!AND`/`!OR`), compiled once at config load and
//! evaluated against any [`VarSource`]. Pure: no I/O, no allocation on the common paths.

use crate::var::{Val, Var};
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_json::Value;
use std::net::IpAddr;

/// Supplies variable values at evaluation time (the gateway's request context).
pub trait VarSource {
    fn get(&self, var: &Var) -> Val<'_>;
}

/// A compiled `vars` expression. An empty expression matches everything.
#[derive(Debug, Clone, Default)]
pub struct Expr {
    root: Option<Node>,
    needs_body: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Logic(Logic, Vec<Node>),
    Cmp(Box<Cmp>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Logic {
    And,
    Or,
    NotAnd,
    NotOr,
}

#[derive(Debug, Clone)]
struct Cmp {
    var: Var,
    op: Op,
    rhs: Value,
    rhs_num: Option<f64>,
    negate: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re(Regex),
    In,
    Has,
    IpMatch(Vec<IpNet>),
}

const OPS: &[&str] = &[
    "==", "~=", ">", ">=", "<", "<=", "~~", "~*", "in", "has", "ipmatch",
];

impl Expr {
    /// Compiles the JSON form of a `vars` value.
    pub fn compile(rules: &Value) -> Result<Expr, String> {
        let arr = rules.as_array().ok_or("vars must be an array")?;
        if arr.is_empty() {
            return Ok(Expr::default());
        }
        if !arr[0].is_array() {
            let is_logic = arr[0].as_str().is_some_and(|s| logic_op(s).is_some());
            if !is_logic {
                return Err("rule should be wrapped inside brackets".into());
            }
        }
        let root = compile_rules(arr)?;
        let mut needs_body = false;
        root.visit(&mut |c| needs_body |= c.var.needs_body());
        Ok(Expr {
            root: Some(root),
            needs_body,
        })
    }

    /// True when evaluation reads `post_arg.*`, so the body must be read first.
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    pub fn eval(&self, src: &dyn VarSource) -> bool {
        match &self.root {
            None => true,
            Some(n) => n.eval(src),
        }
    }
}

fn logic_op(s: &str) -> Option<Logic> {
    match s.to_ascii_uppercase().as_str() {
        "AND" => Some(Logic::And),
        "OR" => Some(Logic::Or),
        "!AND" => Some(Logic::NotAnd),
        "!OR" => Some(Logic::NotOr),
        _ => None,
    }
}

fn compile_rules(rules: &[Value]) -> Result<Node, String> {
    if rules.is_empty() {
        return Err("rule too short".into());
    }
    if rules[0].is_array() {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let inner = r
                .as_array()
                .ok_or_else(|| format!("invalid expression: {r}"))?;
            out.push(compile_rules(inner)?);
        }
        return Ok(Node::Logic(Logic::And, out));
    }
    if let Some(op) = rules[0].as_str().and_then(logic_op) {
        if rules.len() <= 2 {
            return Err("rule too short".into());
        }
        let mut out = Vec::with_capacity(rules.len() - 1);
        for r in &rules[1..] {
            let inner = r
                .as_array()
                .ok_or_else(|| format!("invalid expression: {r}"))?;
            out.push(compile_rules(inner)?);
        }
        return Ok(Node::Logic(op, out));
    }
    compile_cmp(rules).map(|c| Node::Cmp(Box::new(c)))
}

fn compile_cmp(e: &[Value]) -> Result<Cmp, String> {
    let (l, op, r, negate) = match e.len() {
        4 => {
            if e[1].as_str() != Some("!") {
                return Err("bad 'not' expression".into());
            }
            (&e[0], &e[2], Some(&e[3]), true)
        }
        3 => (&e[0], &e[1], Some(&e[2]), false),
        2 => (&e[0], &e[1], None, false),
        _ => return Err(format!("invalid expression: {}", Value::from(e.to_vec()))),
    };
    let name = l
        .as_str()
        .ok_or_else(|| format!("invalid expression: variable name must be a string, got {l}"))?;
    let op_str = op
        .as_str()
        .ok_or_else(|| format!("invalid expression: operator must be a string, got {op}"))?
        .to_ascii_lowercase();
    // Two-element form `[var, value]` means `==` (lua-resty-expr's compatibility rule).
    // `[var, op]` with a known operator compares against nil.
    let (op_str, rhs) = match r {
        Some(r) => (op_str, r.clone()),
        None if OPS.contains(&op_str.as_str()) => (op_str, Value::Null),
        None => ("==".to_string(), op.clone()),
    };
    let var = Var::parse(name)?;
    let op = match op_str.as_str() {
        "==" => Op::Eq,
        "~=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        "~~" | "~*" => {
            let pat = rhs
                .as_str()
                .ok_or_else(|| format!("invalid expression: '{op_str}' needs a string regex"))?;
            let re = RegexBuilder::new(pat)
                .case_insensitive(op_str == "~*")
                .build()
                .map_err(|e| format!("invalid regex '{pat}': {e}"))?;
            Op::Re(re)
        }
        "in" => {
            if !rhs.is_array() {
                return Err("invalid expression: 'in' needs an array value".into());
            }
            Op::In
        }
        "has" => Op::Has,
        "ipmatch" => Op::IpMatch(parse_nets(&rhs)?),
        other => return Err(format!("invalid operator '{other}'")),
    };
    let rhs_num = match &rhs {
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    Ok(Cmp {
        var,
        op,
        rhs,
        rhs_num,
        negate,
    })
}

/// Parses an IP, a CIDR, or an array of them.
pub fn parse_nets(v: &Value) -> Result<Vec<IpNet>, String> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|i| {
            let s = i
                .as_str()
                .ok_or_else(|| format!("invalid IP address or CIDR: {i}"))?;
            parse_net(s)
        })
        .collect()
}

/// Parses `10.0.0.1` or `10.0.0.0/8` (IPv4 or IPv6).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid IP address or CIDR: {s}"))
}

impl Node {
    fn visit(&self, f: &mut dyn FnMut(&Cmp)) {
        match self {
            Node::Logic(_, kids) => kids.iter().for_each(|k| k.visit(f)),
            Node::Cmp(c) => f(c),
        }
    }

    fn eval(&self, src: &dyn VarSource) -> bool {
        match self {
            Node::Cmp(c) => c.eval(src),
            Node::Logic(op, kids) => {
                let r = match op {
                    Logic::And | Logic::NotAnd => kids.iter().all(|k| k.eval(src)),
                    Logic::Or | Logic::NotOr => kids.iter().any(|k| k.eval(src)),
                };
                match op {
                    Logic::And | Logic::Or => r,
                    Logic::NotAnd | Logic::NotOr => !r,
                }
            }
        }
    }
}

impl Cmp {
    fn eval(&self, src: &dyn VarSource) -> bool {
        let l = src.get(&self.var);
        self.compare(&l) != self.negate
    }

    fn compare(&self, l: &Val<'_>) -> bool {
        match &self.op {
            Op::Eq => match self.rhs_num {
                Some(r) => l.to_number().is_some_and(|n| n == r),
                None => lua_eq(l, &self.rhs),
            },
            Op::Ne => match self.rhs_num {
                Some(r) => l.to_number().is_none_or(|n| n != r),
                None => !lua_eq(l, &self.rhs),
            },
            Op::Gt => self.numeric(l, |a, b| a > b),
            Op::Ge => self.numeric(l, |a, b| a >= b),
            Op::Lt => self.numeric(l, |a, b| a < b),
            Op::Le => self.numeric(l, |a, b| a <= b),
            Op::Re(re) => match l {
                Val::Str(s) => re.is_match(s),
                Val::Num(_) => l.to_text().is_some_and(|s| re.is_match(&s)),
                _ => false,
            },
            Op::In => self
                .rhs
                .as_array()
                .is_some_and(|a| a.iter().any(|r| lua_eq(l, r))),
            Op::Has => match l {
                Val::List(items) => items.iter().any(|i| lua_eq(i, &self.rhs)),
                _ => false,
            },
            Op::IpMatch(nets) => match l {
                Val::Str(s) => s
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip))),
                _ => false,
            },
        }
    }

    fn numeric(&self, l: &Val<'_>, f: fn(f64, f64) -> bool) -> bool {
        let r = match &self.rhs {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => crate::var::lua_tonumber(s),
            _ => None,
        };
        match (l.to_number(), r) {
            (Some(a), Some(b)) => f(a, b),
            _ => false,
        }
    }
}

/// Lua's `==` between a variable value and a JSON literal: same type and value; tables
/// (arrays, objects) are never equal; `null` equals a missing variable.
fn lua_eq(l: &Val<'_>, r: &Value) -> bool {
    match (l, r) {
        (Val::Nil, Value::Null) => true,
        (Val::Str(a), Value::String(b)) => a == b,
        (Val::Num(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (Val::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
