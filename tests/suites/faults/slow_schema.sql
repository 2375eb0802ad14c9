CREATE TABLE template_marker (n int);
-- holds the run inside "builds the template" long enough to be interrupted there
SELECT pg_sleep(30);
