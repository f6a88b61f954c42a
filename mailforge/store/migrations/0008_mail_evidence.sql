-- mailforge 0008: evidence for reputation. The Message-IDs of the messages mailforge
-- sent (through the API, and SMTP submissions recorded by the submission milter), so
-- that a DSN or ARF report counts only when it is about one of them.

CREATE TABLE mail_sent_messages (
    domain_id   text NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    -- The Message-ID without its angle brackets.
    message_id  text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 250),
    mailbox_id  text REFERENCES mailboxes (id) ON DELETE SET NULL,
    -- Envelope recipients in lower case; NULL when not known (then a bounce counts once
    -- per message, whatever recipient it names).
    recipients  text[],
    sent_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (domain_id, message_id)
);
CREATE INDEX mail_sent_messages_message_idx ON mail_sent_messages (message_id);
CREATE INDEX mail_sent_messages_expires_idx ON mail_sent_messages (expires_at);
