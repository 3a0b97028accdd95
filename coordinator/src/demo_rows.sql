-- $1 rows with created_at spread evenly over the last 365 days (by the database clock).
INSERT INTO public.audit_log (created_at, user_id, action, table_name, record_id, old_values, new_values,
                              ip_address, request_id)
SELECT now() - make_interval(secs => 86400 * 365 * (g::float8 / greatest($1, 1))),
       (g % 5000) + 1,
       (ARRAY['INSERT','UPDATE','DELETE','LOGIN','EXPORT'])[(g % 5) + 1],
       (ARRAY['orders','customers','invoices','payments','sessions'])[(g % 5) + 1],
       g * 7,
       CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('status', 'pending', 'amount', round((g % 100000) / 100.0, 2)) END,
       jsonb_build_object('status', 'paid', 'amount', round((g % 100000) / 100.0 + 1, 2), 'note', left(md5(g::text), 12)),
       ('10.' || (g % 256) || '.' || ((g / 256) % 256) || '.' || (g % 250 + 1))::inet,
       md5(g::text || 'r')::uuid
FROM generate_series(0, $1 - 1) AS g
