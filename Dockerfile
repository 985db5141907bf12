# syntax=docker/dockerfile:1
# hmarex2mqtt image: build with dev dependencies, ship only dist/ and production dependencies.

# --- build: compile TypeScript --------------------------------------------------------------
FROM node:20-alpine AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only -------------------------------------------------------
FROM node:20-alpine AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime ---------------------------------------------------------------------------------
FROM node:20-alpine
# tini reaps zombies and forwards SIGTERM, so `docker stop` gets the daemon's clean shutdown
# (bridge/state offline, retained codes cleared) instead of a SIGKILL after 10 s.
RUN apk add --no-cache tini \
 && mkdir -p /app/config /app/data \
 && chown node:node /app/data
WORKDIR /app
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
COPY config/config.example.yaml ./config/config.example.yaml

# Settings: /app/config/config.yaml when mounted, else the environment alone. The health listener
# is on in the image (off by default elsewhere) so that HEALTHCHECK and orchestrators can see it.
ENV NODE_ENV=production \
    STATE_DIR=/app/data \
    HEALTH_PORT=8080 \
    HEALTH_HOST=0.0.0.0

# The node image's unprivileged user (uid 1000); /app/data is the only place it writes.
USER node
VOLUME ["/app/data"]
EXPOSE 8080

# 200 only while the broker is connected and every code is current (see src/health.ts).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "dist/healthcheck.js"]

ENTRYPOINT ["/sbin/tini", "--"]
CMD ["node", "dist/main.js", "run"]
