//! GitHub's published REST API description (npm `@octokit/openapi`, pinned in
//! `tests/package.json`, installed by `npm ci --prefix tests`), used to check the GitHub double:
//! every request it receives must be an operation GitHub has (method and path), with the query
//! parameters and the JSON body that operation accepts, and every answer it gives must have a
//! status GitHub documents for it and a body of the documented schema. The double thereby cannot
//! drift from the real API unnoticed.
//!
//! The description is OpenAPI 3.0 (`nullable`, boolean `exclusiveMinimum`); its schemas are turned
//! into JSON Schema 2020-12 once, then validated with the `jsonschema` crate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Map, Value};

/// The URI the description is registered under.
const DESCRIPTION_URI: &str = "urn:github:api";

/// The pinned description's file.
pub fn description_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/node_modules/@octokit/openapi/generated/api.github.com.json")
}

pub struct OpenApi {
    spec: Value,
    /// The whole description as one JSON Schema resource, indexed once: every validator refers
    /// into it (`urn:github:api#<pointer>`) instead of copying its schemas.
    registry: Registry<'static>,
    /// (method, path template split on `/`, JSON pointer of the operation).
    operations: Vec<(String, Vec<String>, String)>,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

/// An operation a request matched.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pointer: String,
}

impl OpenApi {
    /// The description, read once per process; None when it is not installed.
    pub fn github() -> Option<Arc<OpenApi>> {
        static LOADED: OnceLock<Option<Arc<OpenApi>>> = OnceLock::new();
        LOADED
            .get_or_init(|| {
                let text = std::fs::read_to_string(description_path()).ok()?;
                let spec: Value =
                    serde_json::from_str(&text).expect("GitHub's OpenAPI description");
                Some(Arc::new(OpenApi::new(spec)))
            })
            .clone()
    }

    fn new(mut spec: Value) -> OpenApi {
        // Schemas only: the examples are data, kept as GitHub wrote them.
        for part in [
            "schemas",
            "parameters",
            "responses",
            "requestBodies",
            "headers",
        ] {
            to_json_schema(&mut spec["components"][part]);
        }
        to_json_schema(&mut spec["paths"]);
        let mut operations = Vec::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for method in ["get", "post", "patch", "put", "delete"] {
                if item.get(method).is_some() {
                    operations.push((
                        method.to_uppercase(),
                        path.split('/').map(str::to_owned).collect(),
                        format!("/paths/{}/{method}", escape_pointer(path)),
                    ));
                }
            }
        }
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .add(
                DESCRIPTION_URI,
                Draft::Draft202012.create_resource(spec.clone()),
            )
            .and_then(|builder| builder.prepare())
            .expect("GitHub's description as a JSON Schema resource");
        OpenApi {
            spec,
            registry,
            operations,
            validators: Mutex::default(),
        }
    }

    /// GitHub's own example `name` (`#/components/examples/<name>`): the double's answers start
    /// from these and change only what the double models.
    pub fn example(&self, name: &str) -> Value {
        let example = &self.spec["components"]["examples"][name]["value"];
        assert!(
            !example.is_null(),
            "no example {name} in GitHub's description"
        );
        example.clone()
    }

    /// The operation `method path` is, with the path's literal segments matched first.
    fn operation(&self, method: &str, path: &str) -> Option<Operation> {
        let segments: Vec<&str> = path.split('/').collect();
        self.operations
            .iter()
            .filter(|(m, template, _)| {
                m == method
                    && template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .max_by_key(|(_, template, _)| template.iter().filter(|t| !t.starts_with('{')).count())
            .map(|(_, _, pointer)| Operation {
                id: self.spec.pointer(pointer).unwrap()["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pointer: pointer.clone(),
            })
    }

    /// Follows a `$ref` to its target in the description.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) => self.resolve(
                self.spec
                    .pointer(reference.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("{reference} not in the description")),
            ),
            None => value,
        }
    }

    /// A validator for the schema at `pointer`, built once.
    fn validator(&self, pointer: &str) -> Arc<Validator> {
        let mut cache = self.validators.lock().unwrap();
        if let Some(v) = cache.get(pointer) {
            return v.clone();
        }
        assert!(
            self.spec.pointer(pointer).is_some(),
            "{pointer} not in the description"
        );
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        let schema = json!({ "$ref": format!("{DESCRIPTION_URI}#{fragment}") });
        let validator = Arc::new(
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&self.registry)
                .build(&schema)
                .unwrap_or_else(|e| panic!("schema {pointer}: {e}")),
        );
        cache.insert(pointer.to_owned(), validator.clone());
        validator
    }

    fn check(&self, pointer: &str, value: &Value, what: &str) -> Result<(), String> {
        let validator = self.validator(pointer);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: {}", errors.join("; ")))
        }
    }

    /// Checks a request: the operation exists, its query parameters and JSON body are valid.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Operation, String> {
        let operation = self
            .operation(method, path)
            .ok_or_else(|| format!("{method} {path}: no such operation in GitHub's REST API"))?;
        let op = self.spec.pointer(&operation.pointer).unwrap();
        let what = format!("{method} {path} ({})", operation.id);
        let parameters: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| self.resolve(p))
            .collect();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let raw = percent_decode(raw);
            let Some(parameter) = parameters
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name)
            else {
                return Err(format!("{what}: unknown query parameter {name:?}"));
            };
            let schema = &parameter["schema"];
            let value = match schema["type"].as_str() {
                Some("integer") => raw
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("{what}: query {name}={raw:?} is not an integer"))?,
                Some("boolean") => Value::Bool(raw == "true"),
                _ => Value::String(raw),
            };
            let validator = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .build(schema)
                .unwrap();
            let problem = validator.iter_errors(&value).next().map(|e| e.to_string());
            if let Some(e) = problem {
                return Err(format!("{what}: query {name}: {e}"));
            }
        }
        let request_body = self.resolve(&op["requestBody"]);
        let json_schema = format!(
            "{}/requestBody/content/application~1json/schema",
            operation.pointer
        );
        match (request_body.is_object(), body.is_empty()) {
            (true, true) if request_body["required"] == true => {
                return Err(format!("{what}: the body is required"))
            }
            (true, false) => {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("{what}: the body is not JSON: {e}"))?;
                if op["requestBody"]["$ref"].is_string() {
                    let target = op["requestBody"]["$ref"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('#');
                    self.check(
                        &format!("{target}/content/application~1json/schema"),
                        &value,
                        &format!("{what} request body"),
                    )?;
                } else {
                    self.check(&json_schema, &value, &format!("{what} request body"))?;
                }
            }
            (false, false) => return Err(format!("{what}: takes no body")),
            _ => {}
        }
        Ok(operation)
    }

    /// Checks an answer to `operation`: a documented status, and a body of its schema.
    pub fn check_response(
        &self,
        operation: &Operation,
        status: u16,
        body: &[u8],
    ) -> Result<(), String> {
        let op = self.spec.pointer(&operation.pointer).unwrap();
        let what = format!("{} answer {status}", operation.id);
        let key = status.to_string();
        let Some(response) = op["responses"].get(&key) else {
            return Err(format!("{what}: status not documented for the operation"));
        };
        let response = self.resolve(response);
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_null() {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!("{what}: documented without a body"))
            };
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("{what}: not JSON: {e}"))?;
        // The pointer of that schema (through the response's own `$ref`, if any).
        let base = match op["responses"][&key]["$ref"].as_str() {
            Some(target) => target.trim_start_matches('#').to_owned(),
            None => format!("{}/responses/{key}", operation.pointer),
        };
        self.check(
            &format!("{base}/content/application~1json/schema"),
            &value,
            &what,
        )
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A query value, percent-decoded (`+` is a space).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// OpenAPI 3.0 schemas to JSON Schema 2020-12, in place: `nullable: true` admits null, a boolean
/// `exclusiveMinimum`/`exclusiveMaximum` (3.0's form) becomes the number form.
fn to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                to_json_schema(child);
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(exclusive)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if exclusive {
                        if let Some(limit) = map.remove(bound) {
                            map.insert(flag.into(), limit);
                        }
                    }
                }
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                let inner = std::mem::take(map);
                let mut wrapped = Map::new();
                wrapped.insert(
                    "anyOf".into(),
                    json!([{ "type": "null" }, Value::Object(inner)]),
                );
                *map = wrapped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_and_exclusive_bounds_become_json_schema() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "body": { "type": "string", "nullable": true },
                "n": { "type": "integer", "minimum": 0, "exclusiveMinimum": true }
            }
        });
        to_json_schema(&mut schema);
        assert_eq!(
            schema["properties"]["body"],
            json!({ "anyOf": [{ "type": "null" }, { "type": "string" }] })
        );
        assert_eq!(
            schema["properties"]["n"],
            json!({ "type": "integer", "exclusiveMinimum": 0 })
        );
    }

    /// The checks catch what GitHub would not do or accept (the description is installed by
    /// `npm ci --prefix tests`, which make test runs).
    #[test]
    fn requests_and_answers_outside_the_description_are_caught() {
        let api = OpenApi::github().expect("GitHub's description installed");
        let create = api
            .check_request(
                "POST",
                "/repos/acme/platform/issues/42/comments",
                "",
                br#"{"body": "hi"}"#,
            )
            .unwrap();
        assert_eq!(create.id, "issues/create-comment");
        // A comment without its required fields, a status GitHub does not document.
        let partial = serde_json::to_vec(&json!({"id": 1, "body": "hi"})).unwrap();
        assert!(api.check_response(&create, 201, &partial).is_err());
        assert!(api.check_response(&create, 200, &partial).is_err());
        let example = serde_json::to_vec(&api.example("issue-comment")).unwrap();
        api.check_response(&create, 201, &example).unwrap();
        // No such operation; a body of the wrong shape; an unknown query parameter.
        assert!(api
            .check_request("PUT", "/repos/acme/platform/pulls", "", b"")
            .is_err());
        assert!(api
            .check_request(
                "POST",
                "/repos/acme/platform/issues/42/comments",
                "",
                br#"{"text": 1}"#
            )
            .is_err());
        assert!(api
            .check_request(
                "GET",
                "/repos/acme/platform/pulls",
                "per_page=100&colour=red",
                b""
            )
            .is_err());
        assert!(api
            .check_request("GET", "/repos/acme/platform/pulls", "per_page=many", b"")
            .is_err());
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("acme%3Afeature%2Fx"), "acme:feature/x");
        assert_eq!(percent_decode("a+b%"), "a b%");
    }
}
