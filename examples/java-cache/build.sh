#!/bin/sh
# Builds target/java-cache.jar (run it with `java -jar`; its dependencies land in target/lib/).
# Quick when nothing changed; offline first, then online (Maven Central) on a fresh machine.
set -eu
cd "$(dirname "$0")"
jar=target/java-cache.jar
if [ -f "$jar" ] && [ -z "$(find pom.xml src -newer "$jar" -print -quit)" ]; then
    exit 0  # up to date
fi
mvn -B -q -o package >/dev/null 2>&1 || mvn -B -q package
