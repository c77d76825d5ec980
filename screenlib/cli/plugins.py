"""``screenlib plugins``: list installed stain and segmenter plugins, and broken ones."""

from __future__ import annotations

import click


@click.command(name="plugins")
def command() -> None:
    """List installed stain and segmenter plugins (and any that failed to load)."""
    from screenlib.plugins import load_segmenters, load_stains, plugin_failures

    stains = load_stains()
    click.echo("Stains (entry-point group screenlib.stains):")
    for name, stain in sorted(stains.items()):
        click.echo(
            f"  {name:<12} role={stain.role:<8} region={stain.region:<8} "
            f"feature={stain.feature}  {stain.description}"
        )
    click.echo("Segmenters (entry-point group screenlib.segmenters):")
    for name, segmenter in sorted(load_segmenters().items()):
        summary = (segmenter.__doc__ or "").strip().splitlines()
        click.echo(f"  {name:<12} {summary[0] if summary else ''}")
    failures = plugin_failures()
    if failures:
        click.echo("Broken plugins (skipped):")
        for failure in failures:
            click.echo(f"  {failure}")
