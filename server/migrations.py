"""The server's database schema, as forward-only migrations.

Each entry is `(version, name, sql)`; versions count up from 1 without gaps.
A migration that has landed is never edited: change the schema by adding the
next one. `server.store.migrate` applies them, each in its own transaction.
"""

from __future__ import annotations

Migration = tuple[int, str, str]

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        "tenants",
        """
        CREATE TABLE tenants (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 256),
            -- The tenant's policy version: bumped in the transaction of every
            -- change, under a row lock, so versions are gap-free (not a bare
            -- sequence: transactions commit out of order).
            version    bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        "policy store, sign-in, audit, webhooks",
        """
        -- Catch-up by changes is possible from this cursor on; older cursors
        -- (and every cursor after an import) get a snapshot.
        ALTER TABLE tenants ADD COLUMN horizon bigint NOT NULL DEFAULT 0
            CHECK (horizon >= 0 AND horizon <= version);
        -- The audit chain's last row and hash (server/audit.py): a log cut
        -- short no longer verifies.
        ALTER TABLE tenants ADD COLUMN audit_seq bigint NOT NULL DEFAULT 0,
            ADD COLUMN audit_head bytea;

        -- The tenant's current policy, one row per entity (sync/replication/entities.py):
        -- kind 'settings' (resource_types, constraints), 'role' or 'user'.
        -- Documents name roles by id, so a rename touches one row.
        CREATE TABLE entities (
            tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            kind      text   NOT NULL CHECK (kind IN ('settings', 'role', 'user')),
            id        text   NOT NULL,
            position  bigint NOT NULL,
            document  jsonb  NOT NULL,
            version   bigint NOT NULL,
            PRIMARY KEY (tenant_id, kind, id)
        );
        -- New entities go last: max(position) per kind is an index lookup.
        CREATE INDEX entities_order ON entities (tenant_id, kind, position);

        -- Every committed change, with the entities it changed before and after.
        CREATE TABLE change_log (
            tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            version   bigint NOT NULL,
            edit      jsonb  NOT NULL,
            before    jsonb  NOT NULL,
            after     jsonb  NOT NULL,
            author    text   NOT NULL,
            device    text   NOT NULL,
            client    text   NOT NULL,
            seq       bigint NOT NULL,
            at        text   NOT NULL,  -- RFC 3339, exactly the time the edit was applied at
            PRIMARY KEY (tenant_id, version)
        );

        -- Which replica belongs to which device and user, and its last mutation.
        CREATE TABLE clients (
            tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            client    text   NOT NULL,
            device    text   NOT NULL,
            user_id   text   NOT NULL,
            last_seq  bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, client)
        );

        -- Exactly once: a mutation seen before gets its stored outcome again.
        CREATE TABLE client_mutations (
            tenant_id bigint NOT NULL,
            client    text   NOT NULL,
            seq       bigint NOT NULL,
            outcome   jsonb  NOT NULL,
            at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, client, seq),
            FOREIGN KEY (tenant_id, client) REFERENCES clients (tenant_id, client)
                ON DELETE CASCADE
        );

        CREATE TABLE accounts (
            tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            user_id       text   NOT NULL,
            password_hash text   NOT NULL,  -- argon2id, with its own salt and parameters
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, user_id)
        );

        -- A device may be shared; user_id is whoever signed in on it last.
        CREATE TABLE devices (
            tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            device     text   NOT NULL,
            user_id    text   NOT NULL,
            first_seen timestamptz NOT NULL DEFAULT now(),
            last_seen  timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            PRIMARY KEY (tenant_id, device)
        );

        -- Refresh tokens are stored as their SHA-256, never in clear.
        CREATE TABLE refresh_tokens (
            token_hash bytea  PRIMARY KEY,
            tenant_id  bigint NOT NULL,
            user_id    text   NOT NULL,
            device     text   NOT NULL,
            issued_at  timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            FOREIGN KEY (tenant_id, device) REFERENCES devices (tenant_id, device)
                ON DELETE CASCADE
        );

        -- Failed sign-ins of the last window, per user and per address, so the
        -- limit holds across every server process (server/app.py).
        CREATE TABLE sign_in_failures (
            key text        NOT NULL,
            at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX sign_in_failures_by_key ON sign_in_failures (key, at);
        CREATE INDEX sign_in_failures_by_time ON sign_in_failures (at);

        -- The key access tokens are signed with, shared by every server process
        -- on this database (FLEETGATE_TOKEN_KEY overrides it).
        CREATE TABLE signing_keys (
            id         integer PRIMARY KEY,
            key        bytea   NOT NULL CHECK (length(key) >= 32),
            created_at timestamptz NOT NULL DEFAULT now()
        );

        -- Append-only, hash-chained per tenant: each row's hash is SHA-256 over
        -- its content and the previous row's hash (server/audit.py).
        CREATE TABLE audit (
            tenant_id bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            seq       bigint NOT NULL CHECK (seq >= 1),
            at        text   NOT NULL,
            kind      text   NOT NULL,
            actor     text   NOT NULL,
            device    text   NOT NULL,
            payload   text   NOT NULL,  -- canonical JSON, hashed exactly as stored
            prev_hash bytea  NOT NULL,
            hash      bytea  NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        );
        CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit log is append-only';
        END $$;
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();

        CREATE TABLE webhooks (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            url        text   NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
            events     text[] NOT NULL,
            -- The signing secret, sealed (server/sealing.py): never in clear.
            sealed_secret text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            removed_at timestamptz
        );
        CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id) WHERE removed_at IS NULL;
        CREATE TABLE webhook_deliveries (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            tenant_id       bigint NOT NULL,
            event           text   NOT NULL,
            body            text   NOT NULL,
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            failed_at       timestamptz,  -- gave up after the last retry
            last_status     integer,
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
            WHERE delivered_at IS NULL AND failed_at IS NULL;
        CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id);
        """,
    ),
)
