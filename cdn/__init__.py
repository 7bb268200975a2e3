"""HTTP origin for CDN-served state polling (issue: CDN-served state)."""
