//! OpenAI embeddings clients on Vertex AI's `:predict`: `{"input": …}` to
//! `{"instances": [{"content": …}]}` and the `predictions` back to an OpenAI embeddings list
//! with usage. Pure: no I/O.

use serde_json::{Value, json};

/// The `:predict` body for an OpenAI embeddings request; a client error when `input` cannot
/// be embedded.
pub fn request(body: &Value) -> Result<Value, String> {
    let instances: Vec<Value> = match body.get("input") {
        None | Some(Value::Null) => return Err("`input` is required for embeddings".into()),
        Some(Value::String(s)) => vec![json!({"content": s})],
        Some(Value::Array(items)) => {
            let mut v = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let text = match it {
                    Value::String(s) => s.clone(),
                    Value::Array(words) => words
                        .iter()
                        .map(|w| match w {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => return Err(format!("unsupported input type at index {}", i + 1)),
                };
                v.push(json!({"content": text}));
            }
            v
        }
        Some(_) => return Err("`input` must be string or array".into()),
    };
    let mut out = json!({"instances": instances});
    if let Some(d) = body.get("dimensions").and_then(Value::as_u64) {
        out["parameters"] = json!({"outputDimensionality": d});
    }
    Ok(out)
}

/// The OpenAI embeddings answer for a `:predict` answer; `model` is the client's model (else
/// the one in the URL).
pub fn response(res: &Value, model: &str) -> Result<Value, String> {
    let predictions = res
        .get("predictions")
        .and_then(Value::as_array)
        .ok_or("vertex response missing predictions")?;
    let mut data = Vec::with_capacity(predictions.len());
    let mut tokens = 0u64;
    for (i, p) in predictions.iter().enumerate() {
        let e = &p["embeddings"];
        let values = e["values"]
            .as_array()
            .ok_or_else(|| format!("invalid embedding at index {}", i + 1))?;
        tokens += e["statistics"]["token_count"].as_u64().unwrap_or(0);
        data.push(json!({"object": "embedding", "index": i, "embedding": values}));
    }
    Ok(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
}

/// Google's `error.message` in an error body, else the body's text (at most 1 KiB).
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(m) = v["error"]["message"].as_str().or(v["error"].as_str())
    {
        return m.to_string();
    }
    let cut = body.len().min(1024);
    String::from_utf8_lossy(&body[..cut]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert_eq!(
            request(&json!({"input": "Your text string goes here", "model": "m"})).unwrap(),
            json!({"instances": [{"content": "Your text string goes here"}]})
        );
        assert_eq!(
            request(&json!({"input": ["a", ["b", "c"]], "dimensions": 8})).unwrap(),
            json!({"instances": [{"content": "a"}, {"content": "b c"}], "parameters": {"outputDimensionality": 8}})
        );
        assert_eq!(
            request(&json!({"input": [1, 2]})).unwrap_err(),
            "unsupported input type at index 1"
        );
        assert_eq!(
            request(&json!({"input": ["a", {"x": 1}]})).unwrap_err(),
            "unsupported input type at index 2"
        );
        assert_eq!(
            request(&json!({})).unwrap_err(),
            "`input` is required for embeddings"
        );
        assert_eq!(
            request(&json!({"input": 5})).unwrap_err(),
            "`input` must be string or array"
        );
        assert_eq!(
            request(&json!({"input": {}})).unwrap_err(),
            "`input` must be string or array"
        );
    }

    #[test]
    fn predictions_back() {
        let res = json!({"predictions": [
            {"embeddings": {"values": [0.0123, -0.0456, 0.0789, 0.0012], "statistics": {"token_count": 7, "truncated": false}}},
            {"embeddings": {"values": [1.5]}}], "metadata": {}});
        assert_eq!(
            response(&res, "text-embedding-004").unwrap(),
            json!({"object": "list", "model": "text-embedding-004",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789, 0.0012]},
                         {"object": "embedding", "index": 1, "embedding": [1.5]}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        );
        assert_eq!(
            response(&json!({}), "m").unwrap_err(),
            "vertex response missing predictions"
        );
        assert_eq!(
            response(&json!({"predictions": [{"embeddings": {}}]}), "m").unwrap_err(),
            "invalid embedding at index 1"
        );
        assert_eq!(
            error_message(
                br#"{"error":{"code":400,"message":"bad model","status":"INVALID_ARGUMENT"}}"#
            ),
            "bad model"
        );
        assert_eq!(error_message(b"oops"), "oops");
    }
}
