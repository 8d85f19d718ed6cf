-- an alerts.db written by the outbox before verdicts (3 alerts, the first acked, one still due to mqtt),
-- as sqlite3's iterdump: the migration test opens it with today's Outbox
BEGIN TRANSACTION;
CREATE TABLE alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    status TEXT NOT NULL,
    raised_at REAL NOT NULL,
    acked_at REAL,
    body TEXT NOT NULL
);
INSERT INTO "alerts" VALUES(1,'9e003f3d836fb4a2faaa3fcd','lane1','acked',1795512000.0,1795512100.0,'{"id":"9e003f3d836fb4a2faaa3fcd","rule":"bagged_without_scan","site":"store-12","stream":"lane1","product":"milk_carton","start":5.0,"end":8.5,"box":[0.1,0.2,0.3,0.4],"confidence":0.8,"evidence":[{"activity":"bag","product":"milk_carton","start":5.0,"end":8.5}],"raised_at":1795512000.0,"stream_time":16.0,"wall_start":null,"status":"acked","acked_at":1795512100.0}');
INSERT INTO "alerts" VALUES(2,'24eef3c016b0f2f428fed946','lane1','open',1795512001.0,NULL,'{"id":"24eef3c016b0f2f428fed946","rule":"bagged_without_scan","site":"store-12","stream":"lane1","product":"banana","start":65.0,"end":68.5,"box":[0.1,0.2,0.3,0.4],"confidence":0.8,"evidence":[{"activity":"bag","product":"banana","start":65.0,"end":68.5}],"raised_at":1795512001.0,"stream_time":76.0,"wall_start":null,"status":"open","acked_at":null}');
INSERT INTO "alerts" VALUES(3,'4ab2397fd66a16b386abd792','lane2','open',1795512002.0,NULL,'{"id":"4ab2397fd66a16b386abd792","rule":"bagged_without_scan","site":"store-12","stream":"lane2","product":"cheese","start":125.0,"end":128.5,"box":null,"confidence":0.8,"evidence":[{"activity":"bag","product":"cheese","start":125.0,"end":128.5}],"raised_at":1795512002.0,"stream_time":136.0,"wall_start":null,"status":"open","acked_at":null}');
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE outbox (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
    PRIMARY KEY (sink, seq)
);
INSERT INTO "outbox" VALUES('mqtt',3);
CREATE INDEX alerts_by_time ON alerts (raised_at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alerts',3);
COMMIT;
