//! A tiny HCL reader: blocks (`name "label" { ... }`), attributes (`k = v`),
//! strings, numbers, bools, lists and nested objects. Comments `#`, `//`, `/* */`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LBrace,
    RBrace,
    LBrack,
    RBrack,
    Eq,
    Comma,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1
                }
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1
                }
                i += 2;
            }
            '{' => {
                out.push(Tok::LBrace);
                i += 1
            }
            '}' => {
                out.push(Tok::RBrace);
                i += 1
            }
            '[' => {
                out.push(Tok::LBrack);
                i += 1
            }
            ']' => {
                out.push(Tok::RBrack);
                i += 1
            }
            '=' | ':' => {
                out.push(Tok::Eq);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err("unterminated string".into());
                    };
                    i += 1;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err("unterminated string".into());
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                        other => s.push(other),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1
                }
                let s: String = chars[start..i].iter().collect();
                out.push(Tok::Num(
                    s.parse().map_err(|_| format!("bad number {s:?}"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Nesting depth, bounded so hostile input cannot overflow the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Body until `}` (or EOF at top level).
    fn body(&mut self, top: bool) -> Result<Map<String, Value>, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("policy nested too deeply".into());
        }
        let r = self.body_inner(top);
        self.depth -= 1;
        r
    }

    fn body_inner(&mut self, top: bool) -> Result<Map<String, Value>, String> {
        let mut m = Map::new();
        loop {
            match self.peek() {
                None if top => return Ok(m),
                None => return Err("unexpected end of input, expected }".into()),
                Some(Tok::RBrace) if !top => {
                    self.pos += 1;
                    return Ok(m);
                }
                Some(Tok::Comma) => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let key = match self.next() {
                Some(Tok::Ident(s)) | Some(Tok::Str(s)) => s,
                other => return Err(format!("expected identifier, got {other:?}")),
            };
            match self.peek() {
                Some(Tok::Eq) => {
                    self.pos += 1;
                    let v = self.value()?;
                    m.insert(key, v);
                }
                Some(Tok::Str(_)) | Some(Tok::LBrace) => {
                    let mut labels = Vec::new();
                    while let Some(Tok::Str(l)) = self.peek().cloned() {
                        labels.push(l);
                        self.pos += 1;
                    }
                    match self.next() {
                        Some(Tok::LBrace) => {}
                        other => return Err(format!("expected {{, got {other:?}")),
                    }
                    let mut inner = Value::Object(self.body(false)?);
                    for l in labels.into_iter().rev() {
                        let mut wrap = Map::new();
                        wrap.insert(l, inner);
                        inner = Value::Object(wrap);
                    }
                    match m.get_mut(&key) {
                        Some(Value::Array(arr)) => arr.push(inner),
                        _ => {
                            m.insert(key, Value::Array(vec![inner]));
                        }
                    }
                }
                other => return Err(format!("expected = or block after {key:?}, got {other:?}")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("policy nested too deeply".into());
        }
        let r = self.value_inner();
        self.depth -= 1;
        r
    }

    fn value_inner(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::String(s)),
            Some(Tok::Num(n)) => Ok(serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            Some(Tok::Ident(s)) if s == "true" => Ok(Value::Bool(true)),
            Some(Tok::Ident(s)) if s == "false" => Ok(Value::Bool(false)),
            Some(Tok::LBrack) => {
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(Tok::RBrack) => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        Some(Tok::Comma) => self.pos += 1,
                        None => return Err("unterminated list".into()),
                        _ => items.push(self.value()?),
                    }
                }
            }
            Some(Tok::LBrace) => Ok(Value::Object(self.body(false)?)),
            other => Err(format!("unexpected value token {other:?}")),
        }
    }
}

/// Parses HCL into a JSON value; repeated blocks become arrays.
pub fn parse(src: &str) -> Result<Value, String> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    Ok(Value::Object(p.body(true)?))
}
