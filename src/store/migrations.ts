import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

/**
 * Versioned schema migrations, applied in name order by Kysely's Migrator. Written with the
 * schema builder so that the PostgreSQL dialect runs the same definitions.
 */
export type SqlDialectName = 'sqlite' | 'postgres';

function migrations(dialect: SqlDialectName): Record<string, Migration> {
  return {
    '0001_core': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('images')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('sha256', 'text', (c) => c.notNull())
          .addColumn('size_bytes', 'bigint', (c) => c.notNull())
          .addColumn('volume', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('images_name_version', ['name', 'version'])
          .execute();
        await db.schema
          .createTable('pools')
          .addColumn('source', 'text', (c) => c.primaryKey())
          .addColumn('policy', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('hosts')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('mac', 'text')
          .addColumn('labels', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('copies')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('image_id', 'text', (c) => c.notNull().references('images.id'))
          .addColumn('pool', 'text')
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('volume', 'text', (c) => c.notNull())
          .addColumn('method', 'text')
          .addColumn('host_id', 'text')
          .addColumn('error', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('ready_at', 'text')
          .addColumn('copy_ms', 'integer')
          .execute();
        await db.schema.createIndex('copies_image_state').on('copies').columns(['image_id', 'state', 'ready_at']).execute();
        await db.schema.createIndex('copies_state').on('copies').column('state').execute();
        await db.schema
          .createTable('mappings')
          .addColumn('host_id', 'text', (c) => c.primaryKey().references('hosts.id'))
          // A copy is handed out at most once: the database says so too.
          .addColumn('copy_id', 'text', (c) => c.notNull().unique().references('copies.id'))
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('image_id', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('events')
          .addColumn('seq', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('events_subject').on('events').column('subject').execute();
        // An append-only log: the database refuses changes to it.
        if (dialect === 'sqlite') {
          await sql`CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(db);
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(db);
        } else {
          await sql`CREATE FUNCTION prestage_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$`.execute(db);
          await sql`CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION prestage_events_append_only()`.execute(db);
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION prestage_events_append_only()`.execute(db);
          await sql`CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION prestage_events_append_only()`.execute(db);
        }
      },
    },
    '0002_host_keys': {
      async up(db: Kysely<unknown>) {
        // A host's TLS-PSK key (hex); the PSK identity is the host id.
        await db.schema.alterTable('hosts').addColumn('psk', 'text').execute();
      },
    },
    '0003_templates': {
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('images').addColumn('kind', 'text', (c) => c.notNull().defaultTo('golden')).execute();
        await db.schema.alterTable('images').addColumn('base_image_id', 'text').execute();
        await db.schema.alterTable('hosts').addColumn('vars', 'text', (c) => c.notNull().defaultTo('{}')).execute();
        await db.schema
          .createTable('templates')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('spec_sha256', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('template_builds')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('template', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('trigger', 'text', (c) => c.notNull())
          .addColumn('spec', 'text', (c) => c.notNull())
          .addColumn('base_image_id', 'text')
          .addColumn('image_id', 'text')
          .addColumn('version', 'integer')
          .addColumn('log', 'text', (c) => c.notNull())
          .addColumn('error', 'text')
          .addColumn('started_at', 'text', (c) => c.notNull())
          .addColumn('finished_at', 'text')
          .addColumn('build_ms', 'integer')
          .addColumn('rollover_ms', 'integer')
          .addColumn('refilled_ms', 'integer')
          .execute();
        await db.schema.createIndex('template_builds_template').on('template_builds').columns(['template', 'started_at']).execute();
        await db.schema.createIndex('template_builds_image').on('template_builds').column('image_id').execute();
      },
    },
    '0004_pool_demand': {
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('pools').addColumn('prewarm', 'text', (c) => c.notNull().defaultTo('[]')).execute();
        await db.schema.alterTable('pools').addColumn('forecast', 'text').execute();
      },
    },
    '0005_api_tokens': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('api_tokens')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('host_id', 'text')
          // SHA-256 of the secret: a stolen database does not hand out working tokens.
          .addColumn('sha256', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text')
          .execute();
        await db.schema.alterTable('hosts').addColumn('meta_secret', 'text').execute();
      },
    },
    '0006_retention': {
      async up(db: Kysely<unknown>) {
        // When a copy's state last changed: a gone copy is pruned a retention after it went.
        // Rows from before this migration get its time, so they are kept a full retention too.
        await db.schema.alterTable('copies').addColumn('changed_at', 'text').execute();
        await sql`UPDATE copies SET changed_at = ${new Date().toISOString()}`.execute(db);
        // Events with seq below `before_seq` are past retention and may be deleted; every
        // other one stays append-only. One row, raised by prune and never lowered.
        await db.schema
          .createTable('event_horizon')
          .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
          .addColumn('before_seq', 'bigint', (c) => c.notNull())
          .execute();
        await sql`INSERT INTO event_horizon (id, before_seq) VALUES (1, 0)`.execute(db);
        if (dialect === 'sqlite') {
          // No code path can delete a recent event or rewrite any: the database refuses. A missing
          // horizon row counts as 0 (nothing deletable), not as NULL (which would let all through).
          await sql`DROP TRIGGER events_no_delete`.execute(db);
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            WHEN OLD.seq >= COALESCE((SELECT before_seq FROM event_horizon WHERE id = 1), 0)
            BEGIN SELECT RAISE(ABORT, 'events are append-only: only those below the retention horizon may be deleted'); END`.execute(db);
          await sql`CREATE TRIGGER event_horizon_no_lower BEFORE UPDATE ON event_horizon
            WHEN NEW.before_seq < OLD.before_seq OR NEW.id != OLD.id
            BEGIN SELECT RAISE(ABORT, 'the event horizon only rises'); END`.execute(db);
          await sql`CREATE TRIGGER event_horizon_no_delete BEFORE DELETE ON event_horizon
            BEGIN SELECT RAISE(ABORT, 'the event horizon only rises'); END`.execute(db);
        } else {
          await sql`CREATE FUNCTION prestage_events_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF OLD.seq >= COALESCE((SELECT before_seq FROM event_horizon WHERE id = 1), 0) THEN
                RAISE EXCEPTION 'events are append-only: only those below the retention horizon may be deleted';
              END IF;
              RETURN OLD;
            END $$`.execute(db);
          await sql`DROP TRIGGER events_no_delete ON events`.execute(db);
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION prestage_events_delete_guard()`.execute(db);
          await sql`CREATE FUNCTION prestage_horizon_guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' OR NEW.before_seq < OLD.before_seq OR NEW.id <> OLD.id THEN
                RAISE EXCEPTION 'the event horizon only rises';
              END IF;
              RETURN NEW;
            END $$`.execute(db);
          await sql`CREATE TRIGGER event_horizon_guard BEFORE UPDATE OR DELETE ON event_horizon FOR EACH ROW EXECUTE FUNCTION prestage_horizon_guard()`.execute(db);
        }
      },
    },
    '0007_cluster': {
      async up(db: Kysely<unknown>) {
        // Several instances on one database: who is alive, who refills which pool, and who
        // made which copy, so that a dead instance's unfinished work is found and nobody else's.
        await db.schema
          .createTable('instances')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('host', 'text', (c) => c.notNull())
          .addColumn('pid', 'integer', (c) => c.notNull())
          .addColumn('version', 'text', (c) => c.notNull())
          .addColumn('api', 'text')
          .addColumn('nbd', 'text')
          .addColumn('started_at', 'text', (c) => c.notNull())
          .addColumn('heartbeat_at', 'text', (c) => c.notNull())
          .addColumn('stopped_at', 'text')
          .addColumn('reaped_at', 'text')
          .addColumn('reaped_by', 'text')
          .execute();
        await db.schema
          .createTable('pool_leases')
          .addColumn('source', 'text', (c) => c.primaryKey())
          .addColumn('instance_id', 'text', (c) => c.notNull())
          .addColumn('epoch', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.alterTable('copies').addColumn('owner', 'text').execute();
        await db.schema.alterTable('copies').addColumn('fence', 'bigint').execute();
        await db.schema.alterTable('template_builds').addColumn('owner', 'text').execute();
      },
    },
    '0008_claim_order': {
      async up(db: Kysely<unknown>) {
        // The claim takes the oldest spare (ready_at, then id): with the id in the index that is a
        // one-row index scan, not a read and sort of every ready spare of the image.
        await db.schema.createIndex('copies_claim_order').on('copies').columns(['image_id', 'state', 'ready_at', 'id']).execute();
        await db.schema.dropIndex('copies_image_state').execute();
      },
    },
    '0009_host_iscsi': {
      async up(db: Kysely<unknown>) {
        // iSCSI and network boot: the host's initiator name (one host each: its target's ACL lets
        // only it in), the source it boots when it has no copy, the exporter that serves it, and
        // its CHAP secrets (kept beside its PSK, read only to hand it its own credentials).
        for (const column of ['iqn', 'boot_source', 'exporter', 'chap_secret', 'chap_mutual_secret']) {
          await db.schema.alterTable('hosts').addColumn(column, 'text').execute();
        }
        await db.schema.createIndex('hosts_iqn').on('hosts').column('iqn').unique().execute();
      },
    },
  };
}

export function migrationProvider(dialect: SqlDialectName): MigrationProvider {
  return { getMigrations: () => Promise.resolve(migrations(dialect)) };
}
