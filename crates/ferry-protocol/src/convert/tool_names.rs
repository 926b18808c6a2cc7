//! Tool names that OpenAI-style providers accept (`[a-zA-Z0-9_-]{1,64}`), with the map back to
//! the client's names.

use sha2::{Digest, Sha256};

/// Sanitised name → the client's original name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames(Vec<(String, String)>);

impl ToolNames {
    /// The provider-safe form of `name`, remembered for [`ToolNames::restore`]. Unchanged names
    /// are kept as they are; others become `<first 55 sanitised chars>_<8 hex of sha256>`.
    pub fn sanitise(&mut self, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if clean == name && name.len() <= 64 {
            return name.to_string();
        }
        let hash = Sha256::digest(name.as_bytes());
        let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let prefix: String = clean.chars().take(55).collect();
        let out = format!("{prefix}_{hex}");
        if !self.0.iter().any(|(s, _)| *s == out) {
            self.0.push((out.clone(), name.to_string()));
        }
        out
    }

    /// The client's name for a provider-side name.
    pub fn restore<'a>(&'a self, name: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(s, _)| s == name)
            .map_or(name, |(_, o)| o.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising_and_restoring() {
        let mut t = ToolNames::default();
        assert_eq!(t.sanitise("get_weather"), "get_weather");
        let s = t.sanitise("mcp.server/tool name");
        assert!(
            s.starts_with("mcp_server_tool_name_") && s.len() == "mcp_server_tool_name_".len() + 8,
            "{s}"
        );
        assert_eq!(t.restore(&s), "mcp.server/tool name");
        assert_eq!(t.restore("get_weather"), "get_weather");
        let long = "x".repeat(70);
        let s = t.sanitise(&long);
        assert_eq!(s.len(), 64);
        assert_eq!(t.restore(&s), long);
        // Same input, same output; different inputs that sanitise alike stay distinct.
        assert_eq!(t.sanitise("a.b"), t.sanitise("a.b"));
        assert_ne!(t.sanitise("a.b"), t.sanitise("a/b"));
    }
}
