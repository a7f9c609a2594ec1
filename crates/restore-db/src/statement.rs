//! What restore-db does with each statement of a dump: run it, run it on every connection
//! (session settings), run it in parallel with its neighbours (index builds), run it as the admin
//! (extensions the operator allowed) or leave it out (ownership, privileges and subscriptions of
//! the integration server).

/// How a statement is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `SET ...` and `SELECT pg_catalog.set_config(...)`: a session setting every connection of
    /// the restore needs (client_encoding, search_path, ...).
    Session,
    /// `SELECT pg_catalog.setval(...)`: independent of table data, needs no barrier.
    SequenceValue,
    /// `CREATE [UNIQUE] INDEX` or `ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY|UNIQUE`: after
    /// the data, these build indexes that depend on nothing but their table (named as written),
    /// so consecutive ones on different tables run in parallel.
    IndexBuild { table: String },
    /// `ALTER ... OWNER TO <role>`: the integration server's role. Left out: the restore runs as
    /// the sandbox's owner, so whatever it creates is the owner's already.
    Owner,
    /// `CREATE EXTENSION [IF NOT EXISTS] <name>` and `COMMENT ON EXTENSION <name>`: run as the
    /// admin when the operator allows `name` (`--extensions-as-admin`), else as any statement.
    Extension { name: String },
    /// `GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`: about the integration server's roles, which
    /// the sandbox server does not have (pg_restore --no-privileges).
    Privileges,
    /// `CREATE/ALTER SUBSCRIPTION`: would replicate from the integration server's publisher.
    Subscription,
    /// Anything else: in dump order, after everything before it has finished.
    Other,
}

/// What follows the keywords `words` (space-separated, any case) at the start of `text`, when it
/// starts with them as whole words.
fn after_words<'a>(text: &'a str, words: &str) -> Option<&'a str> {
    let mut rest = text;
    for word in words.split(' ') {
        let trimmed = rest.trim_start();
        let head = trimmed.get(..word.len())?;
        let after = &trimmed[word.len()..];
        if !head.eq_ignore_ascii_case(word)
            || !(after.is_empty() || after.starts_with(|c: char| c.is_whitespace() || c == '('))
        {
            return None;
        }
        rest = after;
    }
    Some(rest)
}

fn starts_with_words(text: &str, words: &str) -> bool {
    after_words(text, words).is_some()
}

pub fn classify(text: &str) -> Kind {
    let t = text.trim_start();
    if starts_with_words(t, "SELECT pg_catalog.set_config") {
        return Kind::Session;
    }
    if starts_with_words(t, "SELECT pg_catalog.setval") {
        return Kind::SequenceValue;
    }
    if starts_with_words(t, "SET")
        && !starts_with_words(t, "SET CONSTRAINTS")
        && !starts_with_words(t, "SET TRANSACTION")
        && !starts_with_words(t, "SET SESSION AUTHORIZATION")
        && !starts_with_words(t, "SET ROLE")
    {
        return Kind::Session;
    }
    if starts_with_words(t, "GRANT")
        || starts_with_words(t, "REVOKE")
        || starts_with_words(t, "ALTER DEFAULT PRIVILEGES")
    {
        return Kind::Privileges;
    }
    if starts_with_words(t, "CREATE SUBSCRIPTION") || starts_with_words(t, "ALTER SUBSCRIPTION") {
        return Kind::Subscription;
    }
    if starts_with_words(t, "ALTER") && owner_target_at(t).is_some() {
        return Kind::Owner;
    }
    if let Some(name) = extension_name(t) {
        return Kind::Extension { name };
    }
    if starts_with_words(t, "CREATE INDEX") || starts_with_words(t, "CREATE UNIQUE INDEX") {
        if let Some(table) = index_table(t) {
            return Kind::IndexBuild { table };
        }
    }
    if starts_with_words(t, "ALTER TABLE") {
        let upper = t.to_ascii_uppercase();
        let one_constraint = upper.matches("ADD CONSTRAINT").count() == 1;
        if one_constraint
            && (upper.contains(" PRIMARY KEY ") || upper.contains(" UNIQUE "))
            && !upper.contains(" FOREIGN KEY ")
            && !upper.contains(" REFERENCES ")
        {
            let rest = t["ALTER TABLE".len()..].trim_start();
            let rest = strip_word(rest, "ONLY").unwrap_or(rest);
            if let Some((table, _)) = qualified_name(rest) {
                return Kind::IndexBuild { table };
            }
        }
    }
    Kind::Other
}

/// `rest` after the keyword `word` and the blanks after it, when it starts with that word.
fn strip_word<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let head = rest.get(..word.len())?;
    let after = &rest[word.len()..];
    (head.eq_ignore_ascii_case(word) && after.starts_with(char::is_whitespace))
        .then(|| after.trim_start())
}

/// A possibly qualified, possibly quoted name at the start of `text` (`public.t`,
/// `"Sales"."Orders"`): the name as written, and what follows it.
fn qualified_name(text: &str) -> Option<(String, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return None,
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            let start = i;
            while bytes.get(i).is_some_and(|b| {
                b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80
            }) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Some((text[..i].to_owned(), &text[i..]));
        }
    }
}

/// The table of `CREATE [UNIQUE] INDEX [name] ON [ONLY] table ...`.
fn index_table(statement: &str) -> Option<String> {
    let upper = statement.to_ascii_uppercase();
    let on = upper.find(" ON ")?;
    let rest = statement[on + 4..].trim_start();
    let rest = strip_word(rest, "ONLY").unwrap_or(rest);
    qualified_name(rest).map(|(name, _)| name)
}

/// Where ` OWNER TO <role>;` starts in an `ALTER` statement, when the statement ends with it.
fn owner_target_at(text: &str) -> Option<usize> {
    let body = text.trim_end().strip_suffix(';')?.trim_end();
    let upper = body.to_ascii_uppercase();
    let at = upper.rfind(" OWNER TO ")?;
    let role = &body[at + " OWNER TO ".len()..];
    let plain = !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    let quoted = role.len() >= 2
        && role.starts_with('"')
        && role.ends_with('"')
        && !role[1..role.len() - 1].replace("\"\"", "").contains('"');
    (plain || quoted).then_some(at)
}

/// The extension `CREATE EXTENSION [IF NOT EXISTS] name` or `COMMENT ON EXTENSION name` is about,
/// unquoted (pg_dump writes names that need quotes in double quotes).
fn extension_name(text: &str) -> Option<String> {
    let rest = after_words(text, "CREATE EXTENSION IF NOT EXISTS")
        .or_else(|| after_words(text, "CREATE EXTENSION"))
        .or_else(|| after_words(text, "COMMENT ON EXTENSION"))?
        .trim_start();
    let (name, _) = qualified_name(rest)?;
    if name.contains('.') && !name.starts_with('"') {
        return None;
    }
    Some(
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => name.to_ascii_lowercase(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extension(name: &str) -> Kind {
        Kind::Extension {
            name: name.to_owned(),
        }
    }

    fn index(table: &str) -> Kind {
        Kind::IndexBuild {
            table: table.to_owned(),
        }
    }

    #[test]
    fn what_pg_dump_writes_is_classified() {
        let cases = [
            ("SET client_encoding = 'UTF8';", Kind::Session),
            ("SET default_tablespace = '';", Kind::Session),
            (
                "SELECT pg_catalog.set_config('search_path', '', false);",
                Kind::Session,
            ),
            (
                "SELECT pg_catalog.setval('public.audit_log_id_seq', 2000, true);",
                Kind::SequenceValue,
            ),
            ("SET ROLE integration_app;", Kind::Other),
            ("SET SESSION AUTHORIZATION 'x';", Kind::Other),
            ("SET CONSTRAINTS ALL DEFERRED;", Kind::Other),
            (
                "CREATE INDEX orders_customer_idx ON \"Sales\".\"Orders\" USING btree (customer_id);",
                index("\"Sales\".\"Orders\""),
            ),
            (
                "CREATE UNIQUE INDEX u ON ONLY public.t USING btree (a);",
                index("public.t"),
            ),
            (
                "CREATE INDEX \"a \"\" b\" ON \"x.y\".\"Z \"\"\" USING btree (a);",
                index("\"x.y\".\"Z \"\"\""),
            ),
            (
                "ALTER TABLE ONLY public.customers\n    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);",
                index("public.customers"),
            ),
            (
                "ALTER TABLE public.customers\n    ADD CONSTRAINT customers_email_key UNIQUE (email);",
                index("public.customers"),
            ),
            (
                "ALTER TABLE ONLY \"Sales\".\"Orders\"\n    ADD CONSTRAINT \"Orders_customer_id_fkey\" \
                 FOREIGN KEY (customer_id) REFERENCES public.customers(id);",
                Kind::Other,
            ),
            ("ALTER TABLE public.t OWNER TO integration_app;", Kind::Owner),
            (
                "ALTER FUNCTION \"Sales\".\"Total\"(p_customer bigint) OWNER TO \"Mixed Case\";",
                Kind::Owner,
            ),
            ("ALTER SCHEMA \"Sales\" OWNER TO integration_app;", Kind::Owner),
            (
                "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;",
                extension("citext"),
            ),
            ("create extension \"PostGIS\";", extension("PostGIS")),
            (
                "COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';",
                extension("pgcrypto"),
            ),
            ("CREATE EXTENSIONS x;", Kind::Other),
            (
                "GRANT SELECT ON TABLE public.customers TO integration_reader;",
                Kind::Privileges,
            ),
            ("REVOKE ALL ON SCHEMA public FROM PUBLIC;", Kind::Privileges),
            (
                "ALTER DEFAULT PRIVILEGES FOR ROLE a GRANT SELECT ON TABLES TO b;",
                Kind::Privileges,
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'host=int' PUBLICATION p WITH (connect = false);",
                Kind::Subscription,
            ),
            ("CREATE TABLE public.settings (id int);", Kind::Other),
            ("CREATE INDEXER x;", Kind::Other),
            ("ALTER TABLE t ADD COLUMN owner_to text;", Kind::Other),
            ("REFRESH MATERIALIZED VIEW public.state_counts;", Kind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(classify(text), kind, "{text}");
        }
    }
}
