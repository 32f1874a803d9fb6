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
    (
        3,
        "merge stamps, protocol 2, accounts for everyone",
        """
        -- Merge stamps (sync/replication/members.py): per member of the policy, the
        -- version and client of its last change and of its last narrowing. Written
        -- in the push transaction, never derived from the change log, so
        -- compaction keeps them; pruned only below the tenant's merge floor.
        CREATE TABLE stamps (
            tenant_id        bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            member           text   NOT NULL,  -- a JSON array, e.g. ["user","ann","role","r-1"]
            changed_version  bigint NOT NULL,
            changed_by       text   NOT NULL,  -- a client id; '' for an import
            narrowed_version bigint,
            narrowed_by      text,
            -- The latest change and narrowing by a client other than the last one:
            -- a stale client's own change must not hide someone else's.
            changed_other    bigint,
            narrowed_other   bigint,
            PRIMARY KEY (tenant_id, member)
        ) WITH (fillfactor = 80);  -- stamps are rewritten in place: room for HOT updates
        -- No index on the versions: compaction prunes by scanning the tenant's
        -- stamps, rarely; every push updates them, and an indexed version would
        -- make each of those updates write the index too.

        -- An edit made against a base below the merge floor is judged as if
        -- everything it touches had changed. The lease is how long a replica's
        -- decisions are trusted offline (welcome.lease_seconds).
        ALTER TABLE tenants
            ADD COLUMN merge_floor bigint NOT NULL DEFAULT 0 CHECK (merge_floor >= 0),
            ADD COLUMN lease_seconds integer NOT NULL DEFAULT 604800
                CHECK (lease_seconds BETWEEN 60 AND 31536000),
            ADD COLUMN stale_decisions text NOT NULL DEFAULT 'answer'
                CHECK (stale_decisions IN ('answer', 'deny'));

        -- The policy's digest after each change (sync/replication/digest.py), and
        -- when it committed (the merge floor is found by time).
        ALTER TABLE change_log
            ADD COLUMN digest text,
            ADD COLUMN committed_at timestamptz NOT NULL DEFAULT now();
        CREATE INDEX change_log_by_time ON change_log (tenant_id, committed_at);

        -- Each client's offline decision chain: its head, and the hour's upload quota.
        ALTER TABLE clients
            ADD COLUMN decisions_seq bigint NOT NULL DEFAULT 0,
            ADD COLUMN decisions_head text NOT NULL DEFAULT repeat('0', 64),
            ADD COLUMN decisions_window_start timestamptz,
            ADD COLUMN decisions_window_count integer NOT NULL DEFAULT 0;

        -- Refresh tokens rotate within a family: replaying a spent one revokes it
        -- all, unless it is the same device asking again within a minute because
        -- the answer was lost (its successor, still unused, is replaced).
        ALTER TABLE refresh_tokens
            ADD COLUMN family bytea,
            ADD COLUMN used_at timestamptz,
            ADD COLUMN successor bytea;
        UPDATE refresh_tokens SET family = token_hash;
        ALTER TABLE refresh_tokens ALTER COLUMN family SET NOT NULL;
        CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
        CREATE INDEX refresh_tokens_by_user ON refresh_tokens (tenant_id, user_id);

        -- A sign-in attempt is reserved as a failure before its password is
        -- checked, and released by id when it succeeds.
        ALTER TABLE sign_in_failures ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;

        -- Stored outcomes, one row per push: a push's new seqs are consecutive
        -- (sync/replication/pushes.py), so its outcomes are one range, in order.
        CREATE TABLE client_outcomes (
            tenant_id bigint NOT NULL,
            client    text   NOT NULL,
            first_seq bigint NOT NULL,
            last_seq  bigint NOT NULL CHECK (last_seq >= first_seq),
            outcomes  jsonb  NOT NULL,  -- outcome documents of first_seq .. last_seq
            at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, client, first_seq),
            FOREIGN KEY (tenant_id, client) REFERENCES clients (tenant_id, client)
                ON DELETE CASCADE
        );
        INSERT INTO client_outcomes (tenant_id, client, first_seq, last_seq, outcomes, at)
            SELECT tenant_id, client, seq, seq, jsonb_build_array(outcome), at
            FROM client_mutations;
        DROP TABLE client_mutations;

        -- One-time enrollment codes (fleetgate admin invite), stored as SHA-256.
        CREATE TABLE invitations (
            tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            code_hash  bytea  NOT NULL,
            user_id    text   NOT NULL,
            created_by text   NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at    timestamptz,
            PRIMARY KEY (tenant_id, code_hash)
        );
        CREATE INDEX invitations_by_user ON invitations (tenant_id, user_id);
        """,
    ),
)
