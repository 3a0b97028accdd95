-- The demo's audit table: the shape of a typical audit log, with jsonb old/new values.
CREATE TABLE public.audit_log (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    user_id     bigint NOT NULL,
    action      text   NOT NULL,
    table_name  text   NOT NULL,
    record_id   bigint NOT NULL,
    old_values  jsonb,
    new_values  jsonb,
    ip_address  inet,
    request_id  uuid
);
CREATE INDEX audit_log_created_at_id ON public.audit_log (created_at, id);
