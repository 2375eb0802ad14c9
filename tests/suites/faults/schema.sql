CREATE TABLE template_marker (n int);
