"""The platform's release version: the image, the Helm chart and `/v1/health` all report it."""

VERSION = "0.1.0"
