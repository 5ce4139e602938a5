"""The lookup page's HTML (no script needed), its embeddable form and the snippet script. Pure.

Every miss renders from the same inputs (the page, the `miss` notice), so an unknown order number, a wrong
second factor, another merchant's order and an expired link answer the same bytes.
"""

from __future__ import annotations

from html import escape

from chalicelib.lookup.rules import FACTOR_MAX, ORDER_MAX
from chalicelib.recipient.page import content_security_policy, document_head, theme_href
from chalicelib.web.assets import asset_url
from chalicelib.web.branding import Branding
from chalicelib.web.i18n import Translator

NOTICES = ("miss", "locked", "too_many", "incomplete", "refused")
_COMMON_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Referrer-Policy": "no-referrer",
                   "X-Robots-Tag": "noindex, nofollow", "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-store"}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def render_lookup_page(t: Translator, branding: Branding, *, action: str, page_href: str, static_base: str,
                       notice: str | None = None, embedded: bool = False) -> str:
    """The form: order number and second factor; `notice` (one of NOTICES) above it, announced to screen
    readers. Embedded, the form opens its answer in the whole window (`target=_top`): the tracking page may not
    be framed."""
    if notice is not None and notice not in NOTICES:
        raise ValueError(f"unknown notice {notice!r}")
    title = t("lookup.title", merchant=branding.name)
    out = document_head(t, title, static_base)
    out.append(f'<link rel="stylesheet" href="{_e(asset_url("track.css", static_base))}">')
    out.append(f'<link rel="stylesheet" href="{_e(theme_href(page_href, branding))}">')
    out.append("</head>")
    out.append('<body class="lookup-embedded">' if embedded else "<body>")
    if not embedded:
        out.append(f'<a class="skip-link" href="#main">{_e(t("page.skip"))}</a>')
        out.append(f'<header class="brand-bar"><p class="brand-name">{_e(branding.name)}</p></header>')
    described = ' aria-describedby="lookup-notice"' if notice else ""
    alert = (f'<p id="lookup-notice" class="notice notice--error" role="alert">{_e(t(f"lookup.notice.{notice}"))}</p>'
             if notice else "")
    target = ' target="_top"' if embedded else ""
    out.append(
        '<main id="main"><section class="card" aria-labelledby="lookup-h">'
        f'<h1 id="lookup-h">{_e(title)}</h1><p>{_e(t("lookup.intro"))}</p>{alert}'
        f'<form method="post" action="{_e(action)}"{target}{described}>'
        f'<div class="field"><label for="order">{_e(t("lookup.order"))}</label>'
        f'<input id="order" name="order" type="text" required maxlength="{ORDER_MAX}" autocomplete="off" '
        'autocapitalize="characters" spellcheck="false"></div>'
        f'<div class="field"><label for="check">{_e(t("lookup.check"))}</label>'
        f'<input id="check" name="check" type="text" required maxlength="{FACTOR_MAX}" autocomplete="off" '
        'aria-describedby="check-hint" spellcheck="false">'
        f'<p id="check-hint" class="hint">{_e(t("lookup.check_hint"))}</p></div>'
        f'<button type="submit">{_e(t("lookup.submit"))}</button></form></section></main>')
    if not embedded:
        out.append(f'<footer class="footer"><p>{_e(t("page.powered_by"))}</p></footer>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def page_headers(frame_ancestors: str = "'none'") -> dict[str, str]:
    """The tracking page's strict policy; the embeddable form may be framed by the merchant's origins only."""
    csp = content_security_policy(None).replace("frame-ancestors 'none'", f"frame-ancestors {frame_ancestors}")
    return {**_COMMON_HEADERS, "Content-Security-Policy": csp}


# The snippet: an iframe of the form right where the merchant's page puts the script. No dependencies.
EMBED_SCRIPT = (
    "(function(){var s=document.currentScript;if(!s)return;"
    "var f=document.createElement('iframe');"
    "f.src=s.src.replace(/\\/embed\\.js(\\?.*)?$/,'/embed');"
    "f.title=s.getAttribute('data-title')||'Track your delivery';"
    "f.setAttribute('loading','lazy');"
    "f.style.cssText='border:0;width:100%;max-width:32rem;height:'+(s.getAttribute('data-height')||'30rem');"
    "s.parentNode.insertBefore(f,s.nextSibling);})();\n")


def script_headers() -> dict[str, str]:
    return {"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "public, max-age=3600",
            "X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "cross-origin"}
