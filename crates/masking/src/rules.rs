//! The rules file: which column of which table is masked how.
//!
//! ```yaml
//! # table (in schema public) or schema.table → column → strategy
//! customers:
//!   email: email          # keyed: a valid, unique address, the same for the same input
//!   full_name: name       # keyed: a pseudonym from a fixed list
//!   phone: phone          # keyed: +1555 and seven digits
//!   customer_ref: hash    # keyed: joins across tables still match
//!   notes: null           # emptied (the column must allow NULL)
//!   country: fixed:NL     # one value for every row
//!   created_at: keep      # reviewed: not personal
//! ```

use step_kit::StepError;

/// How a column is masked. NULL stays NULL with every strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// A keyed digest of the value, in the column's type (text: hex; integers; uuid):
    /// deterministic, so equal values in different tables stay equal.
    Hash,
    /// `user-<16 hex of the keyed digest>@example.com`: a valid address, unique while the
    /// originals are, the same for the same original.
    Email,
    /// A pseudonym ("Alex Moreau") chosen by the keyed digest.
    Name,
    /// `+1555` and seven digits chosen by the keyed digest (555: a fictional exchange).
    Phone,
    /// NULL.
    Null,
    /// This value (cast to the column's type) for every row.
    Fixed(String),
    /// Left as it is: the column was reviewed and holds nothing personal.
    Keep,
}

impl Strategy {
    pub fn parse(text: Option<&str>) -> Result<Strategy, String> {
        let Some(text) = text else {
            return Ok(Strategy::Null);
        };
        if let Some(value) = text.strip_prefix("fixed:") {
            return Ok(Strategy::Fixed(value.to_owned()));
        }
        Ok(match text.trim() {
            "hash" => Strategy::Hash,
            "email" => Strategy::Email,
            "name" => Strategy::Name,
            "phone" => Strategy::Phone,
            "null" => Strategy::Null,
            "keep" => Strategy::Keep,
            other => {
                return Err(format!(
                    "unknown strategy {}: one of hash, email, name, phone, null, fixed:VALUE, keep",
                    step_kit::escape_untrusted(other)
                ))
            }
        })
    }

    /// Whether the strategy needs the key.
    pub fn keyed(&self) -> bool {
        matches!(
            self,
            Strategy::Hash | Strategy::Email | Strategy::Name | Strategy::Phone
        )
    }

    /// As written in the rules file (and in the marker table).
    pub fn label(&self) -> String {
        match self {
            Strategy::Hash => "hash".into(),
            Strategy::Email => "email".into(),
            Strategy::Name => "name".into(),
            Strategy::Phone => "phone".into(),
            Strategy::Null => "null".into(),
            Strategy::Fixed(v) => format!("fixed:{v}"),
            Strategy::Keep => "keep".into(),
        }
    }
}

/// One column's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub strategy: Strategy,
}

impl Rule {
    /// `schema.table.column`, for logs and outputs.
    pub fn name(&self) -> String {
        format!("{}.{}.{}", self.schema, self.table, self.column)
    }
}

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER || name.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{what} {}: 1 to {MAX_IDENTIFIER} bytes, no control characters",
            step_kit::escape_untrusted(name)
        ));
    }
    Ok(())
}

/// The rules of a rules file, ordered by table then column. Names are taken as stored in the
/// catalog (case-sensitive, unquoted in the file): `Sales.Orders` is schema `Sales`.
pub fn parse(text: &str) -> Result<Vec<Rule>, StepError> {
    let invalid = |m: String| StepError::invalid(format!("the masking rules: {m}"));
    let tables: Entries<Option<Entries<Option<String>>>> =
        serde_yaml::from_str(text).map_err(|e| {
            invalid(format!(
                "{e} (expected: table or schema.table → column → strategy)"
            ))
        })?;
    let mut rules = Vec::new();
    for (qualified, columns) in tables.0 {
        let (schema, table) = match qualified.split_once('.') {
            Some((s, t)) => (s.to_owned(), t.to_owned()),
            None => ("public".to_owned(), qualified.clone()),
        };
        check_name("schema", &schema).map_err(invalid)?;
        check_name("table", &table).map_err(invalid)?;
        let columns = columns.map(|c| c.0).unwrap_or_default();
        if columns.is_empty() {
            return Err(invalid(format!(
                "{qualified}: no columns (give each column a strategy, keep for the reviewed ones)"
            )));
        }
        for (column, strategy) in columns {
            check_name("column", &column).map_err(invalid)?;
            // The names are checked above (no control characters): shown as they are.
            let strategy = Strategy::parse(strategy.as_deref())
                .map_err(|e| invalid(format!("{qualified}.{column}: {e}")))?;
            rules.push(Rule {
                schema: schema.clone(),
                table: table.clone(),
                column,
                strategy,
            });
        }
    }
    rules.sort_by(|a, b| (&a.schema, &a.table, &a.column).cmp(&(&b.schema, &b.table, &b.column)));
    // `customers` and `public.customers` are one table.
    if let Some(twice) = rules.windows(2).find(|p| p[0].name() == p[1].name()) {
        return Err(invalid(format!(
            "{}: two rules for one column (a table named with and without its schema?)",
            twice[0].name()
        )));
    }
    Ok(rules)
}

/// A YAML mapping's entries, refusing a key given twice: serde_yaml would keep the last one
/// silently, and a rule written twice (`email: hash`, later `email: keep`) must not be decided
/// by its order in the file.
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries<V>, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("duplicate key {key}")));
                    }
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The words of a column name that say it may hold personal data (compared with the name's
/// words: `DisplayName` → display, name; `ip_address` → ip, address; `shipped_at` matches none).
const PERSONAL_WORDS: &[&str] = &[
    "email",
    "mail",
    "phone",
    "mobile",
    "fax",
    "name",
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "username",
    "nickname",
    "address",
    "street",
    "city",
    "zip",
    "zipcode",
    "postcode",
    "postal",
    "birth",
    "birthday",
    "birthdate",
    "dob",
    "ip",
    "ssn",
    "passport",
    "iban",
    "bic",
    "card",
    "token",
    "password",
    "passwd",
    "secret",
    "apikey",
    "salary",
    "gender",
    "latitude",
    "longitude",
    "geo",
    "location",
    "tax",
];

/// Types whose values are personal whatever the column's name (network addresses).
const PERSONAL_TYPES: &[&str] = &["inet", "cidr", "macaddr", "macaddr8"];

/// A column name's words: split at `_`, `-`, spaces, digits and lower-to-upper case changes.
pub fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphabetic() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Why a column looks personal (`None`: it does not).
pub fn looks_personal(column: &str, type_name: &str) -> Option<String> {
    if PERSONAL_TYPES.contains(&type_name) {
        return Some(format!("its type {type_name}"));
    }
    let words = words(column);
    if let Some(w) = words.iter().find(|w| PERSONAL_WORDS.contains(&w.as_str())) {
        return Some(format!("the word {w:?} in its name"));
    }
    // api_key, api-key, ApiKey: two words.
    if words.windows(2).any(|p| p[0] == "api" && p[1] == "key") {
        return Some("the words \"api key\" in its name".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_reads_as_written() {
        let rules = parse(
            "customers:\n  email: email\n  notes: null\n  note2: \"null\"\n  country: fixed:N:L\n\
             Sales.Orders:\n  customer_ref: hash\n  shipped_at: keep\n",
        )
        .unwrap();
        let got: Vec<(String, String)> = rules
            .iter()
            .map(|r| (r.name(), r.strategy.label()))
            .collect();
        assert_eq!(
            got,
            [
                ("Sales.Orders.customer_ref", "hash"),
                ("Sales.Orders.shipped_at", "keep"),
                ("public.customers.country", "fixed:N:L"),
                ("public.customers.email", "email"),
                ("public.customers.note2", "null"),
                ("public.customers.notes", "null"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn bad_rules_files_are_refused_with_the_place() {
        for (text, says) in [
            (
                "customers:\n  email: scramble\n",
                "customers.email: unknown strategy \"scramble\"",
            ),
            ("customers:\n", "customers: no columns"),
            ("- customers\n", "expected: table"),
            (
                "customers:\n  email: email\n  email: hash\n",
                "duplicate key email",
            ),
            (
                "customers:\n  a: keep\ncustomers:\n  b: keep\n",
                "duplicate key customers",
            ),
            (
                "customers:\n  email: email\npublic.customers:\n  email: keep\n",
                "public.customers.email: two rules for one column",
            ),
            (
                &format!("customers:\n  {}: keep\n", "x".repeat(64)),
                "1 to 63 bytes",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.kind, step_kit::ErrorKind::Invalid, "{text}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }

    #[test]
    fn personal_looking_columns_by_their_words_and_types() {
        for (column, ty) in [
            ("email", "text"),
            ("DisplayName", "text"),
            ("ip_address", "text"),
            ("last_login_ip", "text"),
            ("api_key", "text"),
            ("ApiKey", "text"),
            ("date_of_birth", "date"),
            ("PhoneNumber2", "text"),
            ("seen_from", "inet"),
        ] {
            assert!(looks_personal(column, ty).is_some(), "{column}");
        }
        for column in [
            "shipped_at",
            "description",
            "state",
            "total_cents",
            "id",
            "tags",
        ] {
            assert_eq!(looks_personal(column, "text"), None, "{column}");
        }
    }
}
